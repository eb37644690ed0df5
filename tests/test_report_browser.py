"""The report in a real headless Chromium, driven through the DevTools protocol.

Skipped when /usr/bin/chromium (Debian's `chromium`) or the `websocket-client` package is
absent, unless REQUIRE_SHARED_DATA=1 (CI), which makes that a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from test_report_html import CONFIRM, OVERFITTING, STEADY, STEADY_CLEAN, XSS, make_run, trial

from reports.html import write_report
from search.store import RunStore

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # any free port, written to DevToolsActivePort
    "--window-size=1280,900",
]
TIMEOUT_S = 30


def required(present: bool, message: str) -> None:
    if present:
        return
    if os.environ.get("REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)


class DevTools:
    """The browser's DevTools WebSocket: numbered calls, and the events that arrive meanwhile."""

    def __init__(self, url: str):
        import websocket

        self.socket = websocket.create_connection(url, timeout=TIMEOUT_S, suppress_origin=True)
        self.events: list[dict] = []
        self.last_id = 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") != self.last_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, method: str, session: str) -> dict:
        def seen():
            return next(
                (
                    e
                    for e in self.events
                    if e.get("method") == method and e.get("sessionId") == session
                ),
                None,
            )

        while not seen():
            event = json.loads(self.socket.recv())
            # A dialog (an injected alert) blocks the page until answered: fail at once instead.
            if event.get("method") == "Page.javascriptDialogOpening":
                raise AssertionError(f"the page opened a dialog: {event['params']}")
            self.events.append(event)
        return seen()


class Page:
    """One tab, attached in flat mode so its calls and events share the browser's socket."""

    def __init__(self, devtools: DevTools, url: str):
        self.devtools = devtools
        target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        devtools.wait_for("Page.loadEventFired", self.session)

    def call(self, method: str, **params) -> dict:
        return self.devtools.call(method, self.session, **params)

    def events(self, method: str) -> list[dict]:
        return [
            e["params"]
            for e in self.devtools.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def errors(self) -> list[dict]:
        """Uncaught exceptions, console.error/assert calls, and browser-logged errors."""
        console = [
            e for e in self.events("Runtime.consoleAPICalled") if e["type"] in ("error", "assert")
        ]
        logged = [e for e in self.events("Log.entryAdded") if e["entry"]["level"] == "error"]
        return self.events("Runtime.exceptionThrown") + console + logged

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element, as a person would make it."""
        x, y = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self) -> Image.Image:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data)))


def _devtools_url(profile: Path, process: subprocess.Popen) -> str:
    active_port = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        lines = active_port.read_text().splitlines() if active_port.exists() else []
        if len(lines) == 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    raise RuntimeError(f"Chromium gave no DevTools port (exit status {process.poll()})")


@pytest.fixture(scope="module")
def devtools(tmp_path_factory):
    required(CHROMIUM.exists(), f"{CHROMIUM} is absent: apt-get install chromium")
    try:
        import websocket  # noqa: F401
    except ImportError:
        required(False, "the websocket-client package is absent: pip install -e '.[dev]'")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so teardown ends its helpers too
    )
    try:
        client = DevTools(_devtools_url(profile, process))
        yield client
        client.socket.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A finished run whose class folder, run name and error message carry markup."""
    trials = [
        trial(0, epochs=STEADY, lr=0.01, pooling="avg"),
        trial(1, epochs=OVERFITTING, lr=0.001, pooling="max"),
        trial(2, epochs=[(0.5, 0.9, 0.45, 0.9)], lr=0.1, pooling="avg"),
        trial(3, "failed", epochs=[], error=f"oom: {XSS}", lr=1.0, pooling="max"),
        trial(4, epochs=[(0.6, 0.7, 0.5, 0.72)], lr=0.003, pooling="max"),
        trial(5, "pruned", epochs=OVERFITTING[:2], lr=0.03, pooling="avg"),
    ]
    run = make_run(
        tmp_path_factory.mktemp("browser") / "run",
        trials,
        name=f"markup {XSS}",
        class_names=[XSS, "dogs"],
        counts={"train": {XSS: 24, "dogs": 24}, "validation": {XSS: 16, "dogs": 16}},
        skipped=[{"split": "train", "path": f"train/{XSS}/bad.jpg", "reason": "truncated"}],
    )
    return write_report(run)


@pytest.fixture(scope="module")
def page(devtools, report) -> Page:
    return Page(devtools, report.resolve().as_uri())


def test_the_report_loads_without_console_errors(page):
    assert page.errors() == []
    assert page.evaluate("document.querySelectorAll('section').length") == 8
    # Every figure decoded: an embedded image that failed would have no width.
    widths = page.evaluate("Array.from(document.images, (i) => i.complete && i.naturalWidth)")
    assert len(widths) >= 6 and all(widths)


def test_nothing_is_fetched_beyond_the_file_itself(page, report):
    requested = [e["request"]["url"] for e in page.events("Network.requestWillBeSent")]
    assert requested[0] == report.resolve().as_uri()
    assert all(url.startswith(("file:", "data:")) for url in requested)


def leaderboard_column(page: Page, index: int) -> list[str]:
    return page.evaluate(
        "Array.from(document.querySelectorAll('#leaderboard-table tbody tr'),"
        f" (r) => r.cells[{index}].textContent)"
    )


def test_the_leaderboard_sorts_on_a_header_click(page):
    headers = page.evaluate(
        "Array.from(document.querySelectorAll('#leaderboard-table th'), (h) => h.textContent)"
    )
    trial_column = headers.index("trial_id")
    val_column = headers.index("val_accuracy")
    assert leaderboard_column(page, trial_column) == ["2", "0", "4", "1"]  # ranked
    header = f"#leaderboard-table th:nth-child({trial_column + 1})"
    page.click(header)
    assert leaderboard_column(page, trial_column) == ["0", "1", "2", "4"]
    assert page.evaluate(f"document.querySelector('{header}').getAttribute('aria-sort')") == (
        "ascending"
    )
    page.click(header)
    assert leaderboard_column(page, trial_column) == ["4", "2", "1", "0"]
    page.click(f"#leaderboard-table th:nth-child({val_column + 1})")
    assert leaderboard_column(page, val_column) == ["0.7000", "0.7200", "0.8000", "0.9000"]
    assert page.errors() == []


def test_a_screenshot_is_not_blank(page):
    page.evaluate("window.scrollTo(0, 0)")
    image = page.screenshot()
    assert image.convert("RGB").getcolors(maxcolors=1) is None  # more than one colour


def test_markup_in_names_shows_as_text(page):
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], img:not([src])').length") == 0
    text = page.evaluate("document.body.innerText")
    assert f"markup {XSS}" in text  # the run name
    assert f"{XSS}, dogs" in text  # the class names in the summary
    assert f"oom: {XSS}" in text  # the error message
    assert page.evaluate("document.title") == f"Search report: markup {XSS}"
    assert page.events("Page.javascriptDialogOpening") == []


def test_gaps_confirmation_and_refit_read_in_the_browser(devtools, tmp_path):
    """A confirmed, refit run with clean figures for one trial: the gap headers explain
    themselves on hover, the finalists' column sorts on its means, and the notes read."""
    trials = [
        trial(0, clean=STEADY_CLEAN, lr=0.01),
        trial(1, epochs=OVERFITTING, lr=0.1),
        trial(2, epochs=[(0.6, 0.7, 0.5, 0.72)], lr=0.3),
    ]
    refit = {"trial_id": 0, "first_epochs": 3, "fine_tune_epochs": 0, "train_images": 80}
    run = make_run(tmp_path / "run", trials, confirm=CONFIRM, refit=refit | {"test_accuracy": 1.0})
    for trial_id, mean in [(0, 0.79), (2, 0.71)]:
        RunStore(run).finish_trial(
            trial_id,
            {"confirm_mean": mean, "confirm_sd": 0.01, "confirm_val_loss": 0.5, "confirm_runs": 4},
        )
    page = Page(devtools, write_report(run).resolve().as_uri())
    assert page.errors() == []
    titles = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#leaderboard-table th'),"
        " (h) => [h.textContent, h.title]))"
    )
    assert titles["gap_clean"].startswith("clean gap, the one judged")
    assert titles["gap_fit"].startswith("fit-time gap, for comparison")
    column = list(titles).index("confirm")
    page.click(f"#leaderboard-table th:nth-child({column + 1})")
    assert leaderboard_column(page, column) == [
        "0.7100 \u00b1 0.0100 (4 runs)",
        "0.7900 \u00b1 0.0100 (4 runs)",
        "",  # not a finalist: last
    ]
    text = page.evaluate("document.body.innerText")
    assert "Confirmed with 3 seeds" in text
    assert "refit_model.keras, trial 0 retrained on train + validation (80 images)" in text
    assert "trials 1, 2 (gap_basis = fit)" in text
    assert page.errors() == []


def test_the_deployment_tradeoff_reads_and_hovers_in_the_browser(devtools, tmp_path):
    """A multi-objective run (val_accuracy, latency_ms) with a size limit: the section draws
    both costs, the front's points name their trials on hover, and the leaderboard marks them."""
    trials = [
        trial(0, epochs=STEADY, lr=0.01),  # val 0.80
        trial(1, epochs=OVERFITTING, lr=0.1),  # val 0.70
        trial(2, epochs=[(0.6, 0.7, 0.5, 0.72)], lr=0.3),  # val 0.72
        trial(3, epochs=[(0.6, 0.7, 0.5, 0.72)], lr=0.2),
    ]
    run = make_run(
        tmp_path / "run",
        trials,
        objectives=["val_accuracy", "latency_ms"],
        max_size_kb=500.0,
    )
    store = RunStore(run)
    # 2 and 3: slower than 0 and less accurate; 2 over the size limit too.
    figures = {0: (3.0, 400.0), 1: (1.0, 300.0), 2: (3.5, 550.0), 3: (3.5, 450.0)}
    for trial_id, (latency, size) in figures.items():
        store.finish_trial(
            trial_id, {"latency_ms": latency, "latency_iqr_ms": 0.1, "tflite_kb": size}
        )
    store.finish_trial(2, {"status": "infeasible", "error": "over the limit: tflite_kb +50 over"})
    assert store.pareto_front() == {0, 1}
    page = Page(devtools, write_report(run).resolve().as_uri())
    assert page.errors() == []
    titles = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#tradeoff svg g > title'),"
        " (t) => [t.parentNode.id, t.textContent]))"
    )
    assert len(titles) == 8  # four trials, two panels
    assert titles["trial-0-latency_ms"].endswith("(Pareto front)")
    assert titles["trial-1-tflite_kb"].endswith("(Pareto front)")
    assert titles["trial-2-tflite_kb"] == "trial 2: val_accuracy 0.72, tflite_kb 550 (over a limit)"
    # The pointer over trial 1's point on the latency panel lands on that trial's group.
    x, y = page.evaluate(
        "(() => { const g = document.querySelector('#trial-1-latency_ms use');"
        " g.scrollIntoView({block: 'center'}); const r = g.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    hovered = page.evaluate(
        f"document.elementFromPoint({x}, {y}).closest('g[id^=\"trial-\"]').querySelector('title')"
        ".textContent"
    )
    assert hovered.startswith("trial 1: val_accuracy 0.7, latency_ms 1")
    headers = page.evaluate(
        "Array.from(document.querySelectorAll('#leaderboard-table th'), (h) => h.textContent)"
    )
    marks = dict(
        zip(
            leaderboard_column(page, headers.index("trial_id")),
            leaderboard_column(page, headers.index("pareto")),
            strict=True,
        )
    )
    assert marks == {"0": "yes", "1": "yes", "3": "no"}  # 2 is over a limit: not ranked
    text = page.evaluate("document.getElementById('tradeoff').innerText")
    assert "multi-objective search of val_accuracy, latency_ms" in text
    assert page.screenshot().convert("RGB").getcolors(maxcolors=1) is None
