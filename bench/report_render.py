"""How long report.html takes to render for a large run: 200 trials of 50 epochs.

The store is the one tests/test_report_html.py renders (`synthetic_run`: Hyperband-like noisy
curves, conditional and bookkeeping columns, 5% failed and 5% pruned trials). After one
warm-up render of a 3-trial store (imports, fonts), the large store is rendered --reps times in
this process; each render's CPU time (`time.process_time`, so other work on the machine weighs
less) and wall time are recorded, with each stage's share from one further render.

Writes bench/results/report_render.json and prints a Markdown line.

    python bench/report_render.py             # 5 renders: about a minute on 2 CPU cores
    python bench/report_render.py --reps 9
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]  # run from anywhere

from common import cpu_model  # noqa: E402
from test_report_html import synthetic_run  # noqa: E402

from reports import analysis, html  # noqa: E402
from search.store import RunStore  # noqa: E402

RESULT = REPO / "bench" / "results" / "report_render.json"
TRIALS, EPOCHS = 200, 50
TARGET_S = 10.0  # the report issue's bound for this store


def _timed(call) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    started, cpu_started = time.perf_counter(), time.process_time()
    call()
    return time.process_time() - cpu_started, time.perf_counter() - started


def _quartiles(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {"median": round(median, 3), "q1": round(q1, 3), "q3": round(q3, 3)}


def _stages(run: Path) -> dict[str, float]:
    """CPU seconds of the stages that dominate a render, each timed on its own."""
    store = RunStore(run)
    trials, epochs = store.trials(), store.epochs()
    table: dict = {}
    analyse, _ = _timed(lambda: table.update(t=analysis.analyse_trials(trials, epochs)))
    importance, _ = _timed(lambda: analysis.hyperparameter_importance(table["t"]))
    context, _ = _timed(lambda: html.report_context(store))
    return {
        "overfitting_measures_cpu_s": round(analyse, 3),
        "fanova_importance_cpu_s": round(importance, 3),
        "report_context_cpu_s": round(context, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="renders of the large store")
    parser.add_argument("--out", type=Path, default=RESULT, help="the JSON written")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        run = synthetic_run(Path(scratch) / "big", n_trials=TRIALS, n_epochs=EPOCHS)
        html.write_report(synthetic_run(Path(scratch) / "warm-up", n_trials=3, n_epochs=4))
        times = [_timed(lambda: html.write_report(run)) for _ in range(args.reps)]
        stages = _stages(run)
    cpu, wall = [t[0] for t in times], [t[1] for t in times]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "store": {"trials": TRIALS, "epochs_per_trial": EPOCHS},
        "reps": args.reps,
        "render_cpu_s": _quartiles(cpu),
        "render_wall_s": _quartiles(wall),
        "all_cpu_s": [round(c, 3) for c in cpu],
        "target_s": TARGET_S,
        "stages": stages,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    c, w = result["render_cpu_s"], result["render_wall_s"]
    print(
        f"| {TRIALS} trials x {EPOCHS} epochs | {c['median']:.2f} s CPU "
        f"(IQR {c['q1']:.2f}-{c['q3']:.2f}) | {w['median']:.2f} s wall | {args.reps} renders |"
    )


if __name__ == "__main__":
    main()
