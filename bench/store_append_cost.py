"""What recording an epoch costs the run store (issue 19), before and after epochs.csv became
append-only, in one process run.

Two arms append the same epoch rows to a fresh run directory (under bench/runs/, on the disk
runs are written to, so fsync costs what it costs there):

- before: the store as it was (`RunStore` of commit d4af1a3), whose `append_epoch` re-read
  trials.csv and epochs.csv and wrote both back (the `_rows` context below, copied from it);
- after: `search.store.RunStore`, which appends one line to epochs.csv and fsyncs it.

A run of 200 trials x 50 epochs is 10,000 epoch rows. Two measurements, each repeated --reps
times, the arms alternating:

- `at_size`: each arm's store is filled (its own `replace_all`) with the rows and complete
  trials a run has just before N rows, then one more trial of 100 epochs is appended to it
  (begin, 100 x append, finish) and each append timed: the cost per append at N rows. Filling
  directly is what lets the before arm be measured up to the full 10,000 rows at all: building
  its store append by append takes about 13 minutes per repetition on 2 CPU cores.
- `run`: the after arm only, appended as a search does it, 200 trials of begin, 50 appends and
  finish, each append timed; the median of the last 100 appends of each 1,000.

Writes bench/results/store_append_cost.json and prints a Markdown table.

    python bench/store_append_cost.py           # 3 repetitions: about 7 minutes on 2 CPU cores
    python bench/store_append_cost.py --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # run as a script from anywhere

import pandas as pd  # noqa: E402
from common import cpu_model  # noqa: E402

from search.atomic import atomic_write  # noqa: E402
from search.ranking import clean_value as _clean  # noqa: E402
from search.schema import EPOCH_COLUMNS  # noqa: E402
from search.store import RunStore  # noqa: E402

RESULT = REPO / "bench" / "results" / "store_append_cost.json"
TRIALS, EPOCHS = 200, 50
SIZES = (1000, 2000, 5000, 10000)  # epoch rows in the store
TIMED = 100  # appends timed per size
HPARAMS = {"learning_rate": 0.001, "units": 64, "dropout": 0.2, "optimizer": "adam"}


class BeforeStore(RunStore):
    """The store before issue 19: every change, an epoch included, re-read and rewrote both
    tables (search/store.py at d4af1a3, `_read_rows`, `_rows` and `append_epoch`)."""

    @staticmethod
    def _read_rows(path: Path) -> list[dict]:
        if not path.exists():
            return []
        frame = pd.read_csv(path).astype(object)
        return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]

    @contextmanager
    def _both(self) -> Iterator[tuple[dict[int, dict], list[dict]]]:
        with self._locked():
            trials = {r["trial_id"]: r for r in self._read_rows(self.trials_csv)}
            epochs = self._read_rows(self.epochs_csv)
            yield trials, epochs
            atomic_write(
                self.trials_csv, lambda p: self._trial_frame(trials).to_csv(p, index=False)
            )
            atomic_write(
                self.epochs_csv, lambda p: self._epoch_frame(epochs).to_csv(p, index=False)
            )

    def begin_trial(self, trial_id: int, hparams: dict) -> None:
        with self._both() as (trials, epochs):
            epochs[:] = [r for r in epochs if r["trial_id"] != trial_id]
            row = {"trial_id": trial_id, "status": "running"}
            trials[trial_id] = row | {f"hp_{k}": _clean(v) for k, v in hparams.items()}

    def append_epoch(self, row: dict) -> None:
        with self._both() as (_, epochs):
            epochs.append({c: _clean(row.get(c)) for c in EPOCH_COLUMNS})

    def finish_trial(self, trial_id: int, results: dict, hparams: dict | None = None) -> None:
        with self._both() as (trials, _):
            trials[trial_id].update({k: _clean(v) for k, v in results.items()})
            self._add_intervals([trials[trial_id]])


ARMS = {"before": BeforeStore, "after": RunStore}


def epoch_row(trial_id: int, epoch: int) -> dict:
    """A plausible row with full-precision floats, as Keras's logs give them."""
    x = (trial_id * 131 + epoch * 17) % 997 / 997
    return {
        "trial_id": trial_id,
        "epoch": epoch,
        "loss": 0.7 - 0.3 * x,
        "accuracy": 0.5 + 0.4 * x,
        "val_loss": 0.72 - 0.25 * x,
        "val_accuracy": 0.49 + 0.38 * x,
        "train_loss_clean": 0.69 - 0.3 * x,
        "train_accuracy_clean": 0.51 + 0.39 * x,
        "seconds": round(3 + x, 3),
        "phase": "head",
    }


def trial_results(trial_id: int) -> dict:
    x = trial_id % 37 / 37
    return {
        "status": "complete",
        "best_epoch": EPOCHS,
        "val_accuracy": 0.6 + 0.3 * x,
        "val_loss": 0.6 - 0.2 * x,
        "duration_s": 200.0,
        "n_params": 123456,
    }


def append_trial(store: RunStore, trial_id: int, epochs: int) -> list[float]:
    """Begin, append `epochs` rows, finish; the seconds of each append."""
    store.begin_trial(trial_id, HPARAMS)
    times = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        store.append_epoch(epoch_row(trial_id, epoch))
        times.append(time.perf_counter() - started)
    store.finish_trial(trial_id, trial_results(trial_id))
    return times


def at_size(arm: str, size: int, root: Path) -> float:
    """Median seconds per append of the `TIMED` appends that bring a store to `size` rows."""
    store = ARMS[arm](Path(tempfile.mkdtemp(prefix=f"{arm}-{size}-", dir=root)))
    before = size - TIMED
    trials = [
        {"trial_id": t, "status": "complete"}
        | {f"hp_{k}": v for k, v in HPARAMS.items()}
        | trial_results(t)
        for t in range(1, before // EPOCHS + 1)
    ]
    rows = [epoch_row(t["trial_id"], e) for t in trials for e in range(1, EPOCHS + 1)]
    store.replace_all(trials, rows)
    times = append_trial(store, len(trials) + 1, TIMED)
    assert len(pd.read_csv(store.epochs_csv)) == size
    shutil.rmtree(store.run_dir)
    return statistics.median(times)


def full_run(root: Path) -> dict[int, float]:
    """The after arm through a whole run: median seconds per append of the last `TIMED`
    appends of each 1,000, by rows stored after them."""
    store = RunStore(Path(tempfile.mkdtemp(prefix="after-run-", dir=root)))
    times = [s for t in range(1, TRIALS + 1) for s in append_trial(store, t, EPOCHS)]
    assert len(pd.read_csv(store.epochs_csv)) == TRIALS * EPOCHS
    shutil.rmtree(store.run_dir)
    return {n: statistics.median(times[n - TIMED : n]) for n in range(1000, len(times) + 1, 1000)}


def spread(values: list[float]) -> dict:
    """Milliseconds: median, min and max over the repetitions."""
    ms = [1000 * v for v in values]
    return {
        "median_ms": round(statistics.median(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
        "runs_ms": [round(v, 3) for v in ms],
    }


def cell(s: dict) -> str:
    return f"{s['median_ms']:.1f} ms ({s['min_ms']:.1f} to {s['max_ms']:.1f})"


def table(results: dict) -> str:
    lines = [
        "| epoch rows stored | before: per append, median (range) | after: per append, median "
        "(range) | before / after | after, in a whole run (range) |",
        "|---|---|---|---|---|",
    ]
    for size in SIZES:
        before, after = results["at_size"]["before"][size], results["at_size"]["after"][size]
        run = results["run"][size]
        ratio = before["median_ms"] / after["median_ms"]
        lines.append(f"| {size:,} | {cell(before)} | {cell(after)} | {ratio:.0f}x | {cell(run)} |")
    return "\n".join(lines)


def machine(root: Path) -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "store_on": str(root.relative_to(REPO)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each arm (>= 3)")
    args = parser.parse_args()
    started = time.perf_counter()
    root = REPO / "bench" / "runs"
    root.mkdir(parents=True, exist_ok=True)
    found: dict = {arm: {size: [] for size in SIZES} for arm in ARMS}
    runs: dict[int, list[float]] = {}
    for rep in range(args.reps):
        for arm in ARMS if rep % 2 == 0 else list(ARMS)[::-1]:
            for size in SIZES:
                found[arm][size].append(at_size(arm, size, root))
                print(f"rep {rep + 1} {arm} {size}: {1000 * found[arm][size][-1]:.2f} ms")
        for size, seconds in full_run(root).items():
            runs.setdefault(size, []).append(seconds)
        print(f"rep {rep + 1} after, whole run: {1000 * runs[TRIALS * EPOCHS][-1]:.2f} ms")
    results: dict = {
        "at_size": {
            arm: {n: spread(v) for n, v in by_size.items()} for arm, by_size in found.items()
        },
        "run": {n: spread(v) for n, v in runs.items()},
        "timed_appends": TIMED,
        "trials_x_epochs": [TRIALS, EPOCHS],
        "repetitions": args.reps,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(root),
    }
    results["table"] = table(results)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    RESULT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(results["table"])
    print(f"wrote {RESULT.relative_to(REPO)} in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
