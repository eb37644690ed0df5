"""What --clean-train-eval costs (issue 18): the share of a trial's time spent measuring the
clean training accuracy, in one process run.

Each arm is a one-trial search as a user runs it (`search.steps.run_search`, a fresh run directory
and cache each time), on a subset of cats_and_dogs_filtered at 64 px: 100 training and 63
validation photos per class (a fifth of those become test), so the clean sample is 100 of the
200 training images. The spaces, each with --clean-train-eval every and off, side by side, the
two arms' order alternating between repetitions:

- scratch and augment at their defaults, 5 epochs;
- transfer, fine-tuning (--fix mode=fine_tune) at its defaults (augmented: both phases train on
  images), 3 epochs a phase;
- transfer, fine-tuning without augmentation: the frozen phase trains its head on cached
  features, and is measured on them.

Patience equals the epochs, and the clean evaluation draws no random numbers, so both arms train
the same epochs to the same weights (checked: `same_training`). Two figures per pair:
`share` = (every - off) / every of the trial's duration_s, what a user waits; `measured_share` =
the seconds spent inside the clean evaluation (timed around it in this process) / duration_s.

Writes bench/results/clean_eval_cost.json and prints a Markdown table.

    python bench/clean_eval_cost.py             # 3 repetitions: about 11 minutes on 2 CPU cores
    python bench/clean_eval_cost.py --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # run as a script from anywhere
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
from search_speed import machine  # noqa: E402

from search.clean_eval import CleanEvaluation  # noqa: E402
from search.steps import SearchConfig, run_search  # noqa: E402
from search.store import RunStore  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cats_and_dogs_filtered"
WEIGHTS = (
    REPO.parent / "shared" / "data" / "keras-models"
    / "mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5"
)  # fmt: skip
RESULT = REPO / "bench" / "results" / "clean_eval_cost.json"
PER_CLASS = {"train": 100, "validation": 63}
IMAGE_SIZE = 64
NO_AUGMENTATION = ("flip=none", "rotation=0", "zoom=0", "translation=0", "contrast=0")
# name: (space, epochs a phase, --fix)
ARMS = {
    "scratch": ("scratch", 5, ()),
    "augment": ("augment", 5, ()),
    "transfer fine-tune": ("transfer", 3, ("mode=fine_tune",)),
    "transfer fine-tune, frozen phase on features": (
        "transfer",
        3,
        ("mode=fine_tune", *NO_AUGMENTATION),
    ),
}
MODES = ("every", "off")


def subset(target: Path) -> Path:
    """The first PER_CLASS photos of each split and class, linked."""
    for split, count in PER_CLASS.items():
        for name in ("cats", "dogs"):
            folder = target / split / name
            folder.mkdir(parents=True)
            for photo in sorted((DATA / split / name).iterdir())[:count]:
                (folder / photo.name).symlink_to(photo)
    return target


class CleanTimer:
    """Seconds spent in CleanEvaluation.measure, the clean evaluation, in this process."""

    def __init__(self):
        self.seconds = 0.0
        measure = CleanEvaluation.measure

        @wraps(measure)
        def timed(evaluation, *args, **kwargs):
            start = time.perf_counter()
            try:
                return measure(evaluation, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        CleanEvaluation.measure = timed


def one_trial(data: Path, runs: Path, arm: str, mode: str, name: str, timer: CleanTimer) -> dict:
    space, epochs, fix = ARMS[arm]
    config = SearchConfig(
        space=space,
        data=str(data),
        max_trials=1,
        epochs=epochs,
        patience=epochs,
        image_size=IMAGE_SIZE,
        weights=str(WEIGHTS),
        fix=fix,
        clean_train_eval=mode,
        name=name,
        runs_dir=str(runs),
    )
    timer.seconds = 0.0
    store = run_search(config)
    row = store.trials().iloc[0]
    assert row["status"] == "complete", row["error"]
    epochs_run = RunStore(store.run_dir).epochs()
    return {
        "duration_s": float(row["duration_s"]),
        "clean_s": round(timer.seconds, 3),
        "epochs": len(epochs_run),
        "val_loss": float(row["val_loss"]),
        "features": None if pd.isna(row.get("features")) else str(row["features"]),
    }


def summary(pairs: list[dict]) -> dict:
    shares = [p["share"] for p in pairs]
    measured = [p["measured_share"] for p in pairs]
    return {
        "share_median": round(statistics.median(shares), 4),
        "share_min": round(min(shares), 4),
        "share_max": round(max(shares), 4),
        "measured_share_median": round(statistics.median(measured), 4),
        "measured_share_min": round(min(measured), 4),
        "measured_share_max": round(max(measured), 4),
        "trial_s_off_median": round(statistics.median(p["off"]["duration_s"] for p in pairs), 2),
        "same_training": all(
            p["every"]["epochs"] == p["off"]["epochs"]
            and abs(p["every"]["val_loss"] - p["off"]["val_loss"]) < 1e-6
            for p in pairs
        ),
    }


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def table(results: dict) -> str:
    lines = [
        "| trial | epochs | trial time, off | cost of `every`: time difference, median "
        "(range) | time inside the evaluation, median (range) |",
        "|---|---|---|---|---|",
    ]
    for arm, found in results["arms"].items():
        s = found["summary"]
        lines.append(
            f"| {arm} | {found['pairs'][0]['every']['epochs']} | {s['trial_s_off_median']:.1f} s | "
            f"{pct(s['share_median'])} ({pct(s['share_min'])} to {pct(s['share_max'])}) | "
            f"{pct(s['measured_share_median'])} ({pct(s['measured_share_min'])} to "
            f"{pct(s['measured_share_max'])}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each pair (>= 2)")
    args = parser.parse_args()
    timer = CleanTimer()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clean-eval-") as tmp:
        data, runs = subset(Path(tmp) / "data"), Path(tmp) / "runs"
        # TensorFlow's start-up is paid before anything is timed.
        one_trial(data, runs, "scratch", "off", "warm-up", timer)
        results: dict = {"arms": {arm: {"pairs": []} for arm in ARMS}}
        for rep in range(args.reps):
            for arm in ARMS:
                order = MODES if rep % 2 == 0 else MODES[::-1]
                pair = {m: one_trial(data, runs, arm, m, f"{arm}-{m}-{rep}", timer) for m in order}
                every, off = pair["every"], pair["off"]
                pair["share"] = round(
                    (every["duration_s"] - off["duration_s"]) / every["duration_s"], 4
                )
                pair["measured_share"] = round(every["clean_s"] / every["duration_s"], 4)
                results["arms"][arm]["pairs"].append(pair)
                print(f"{arm} rep {rep + 1}: {json.dumps(pair)}", flush=True)
        counts = RunStore(runs / "warm-up").read_run_info()["counts"]
    for found in results["arms"].values():
        found["summary"] = summary(found["pairs"])
    results |= {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "image_size": IMAGE_SIZE,
        "images": {split: sum(by_class.values()) for split, by_class in counts.items()},
        "repetitions": args.reps,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    results["table"] = table(results)
    RESULT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(results["table"])
    print(f"wrote {RESULT.relative_to(REPO)} in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
