"""Deployment-aware search (issue 21) on cats_and_dogs_filtered, through the command line.

1. Two multi-objective searches of validation accuracy against TFLite latency (this machine's
   CPU, the TFLite interpreter, one thread, batch 1), with the image size searched too:
   a. `transfer`, frozen MobileNetV2 without augmentation (the feature cache serves every
      trial), `--image-sizes 96,128,160`, TPE (Optuna's multi-objective TPE: NSGA-II's first
      generation of 50 would be random sampling at this budget);
   b. `scratch`, the documents' CNN family, `--image-sizes 96,128`.
   For each: its Pareto front, its most accurate trial, and the fastest front trial within
   1 point of that accuracy. Target: that trial is >= 2x faster.
2. For the most accurate transfer trial at each image size: `export --format tflite --quantize
   int8`, which measures the float32 and int8 files side by side in one process: test accuracy
   with its Wilson 95% interval, size and latency. Target: int8 within 1 point of float32 at
   >= 3x smaller. A trial whose model the search did not keep (not on the front) is trained
   again with its hyperparameters pinned (--fix), in a run of one trial.

Runs are resumable: each goes to bench/runs/<name>, and running the script again resumes the
searches where they stopped (a run of that name resumes) and skips what is done.
Writes bench/results/deploy.json and the table in bench/README.md.

    python bench/deploy.py            # about 45 minutes on 2 CPU cores
    python bench/deploy.py --quick    # 32-48 px, 20 images a class, tiny budgets, into
                                      # bench/quick/: a few minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # run as a script from anywhere


from common import cpu_model, write_block  # noqa: E402

from search.data import list_splits  # noqa: E402
from search.schema import trial_hyperparameters  # noqa: E402
from search.store import RunStore  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
DATA = SHARED / "cats_and_dogs_filtered"
WEIGHTS = SHARED / "keras-models" / "mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5"
FROZEN_NO_AUGMENTATION = ("mode=frozen", "flip=none", "rotation=0", "zoom=0", "translation=0")
FROZEN_NO_AUGMENTATION += ("contrast=0",)
OBJECTIVES = "val_accuracy,latency_ms"
WITHIN = 0.01  # "within 1 point" of the most accurate trial's validation accuracy
SPEED_TARGET, SIZE_TARGET = 2.0, 3.0
QUICK_IMAGES = 20
SCRIPT = "bench/deploy.py"


@dataclass(frozen=True)
class Search:
    key: str
    space: str
    sizes: tuple[int, ...]
    trials: int
    epochs: int
    fix: tuple[str, ...]
    weights: bool  # the space builds MobileNetV2: pass the local weights file


def searches(quick: bool) -> list[Search]:
    if quick:
        return [
            Search("transfer", "transfer", (32, 48), 3, 2, FROZEN_NO_AUGMENTATION, True),
            Search("scratch", "scratch", (32, 48), 2, 2, (), False),
        ]
    return [
        Search("transfer", "transfer", (96, 128, 160), 30, 10, FROZEN_NO_AUGMENTATION, True),
        Search("scratch", "scratch", (96, 128), 8, 15, (), False),
    ]


def run_cli(*args: str) -> None:
    """`python run_search.py ARGS` as a user runs it; a failure stops the benchmark."""
    command = [sys.executable, str(REPO / "run_search.py"), *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def search_args(search: Search, data: Path, runs: Path) -> list[str]:
    args = ["--space", search.space, "--data", str(data), "--runs-dir", str(runs)]
    args += ["--name", f"deploy-{search.key}", "--backend", "optuna", "--sampler", "tpe"]
    args += ["--objectives", OBJECTIVES, "--image-sizes", ",".join(map(str, search.sizes))]
    args += ["--max-trials", str(search.trials), "--epochs", str(search.epochs)]
    args += ["--patience", "3", "--quiet"]
    args += [part for pin in search.fix for part in ("--fix", pin)]
    return args + (["--weights", str(WEIGHTS)] if search.weights else [])


def trade_off(store: RunStore) -> dict:
    """The front, the most accurate trial and the fastest front trial within WITHIN of it."""
    trials = store.trials()
    done = trials[trials["status"] == "complete"].dropna(subset=["latency_ms"])
    best = store.best_trial()
    front = done[done["pareto"].astype(bool)].sort_values("latency_ms")
    close = front[front["val_accuracy"] >= best["val_accuracy"] - WITHIN - 1e-9]
    fastest = close.iloc[0]
    speedup = float(best["latency_ms"] / fastest["latency_ms"])
    # What the target's speed costs: the most accurate front trial at least 2x faster.
    faster = front[front["latency_ms"] * SPEED_TARGET <= best["latency_ms"]]
    twice = faster.sort_values("val_accuracy", ascending=False).head(1).to_dict("records")
    return {
        "trials": len(trials),
        "complete": len(done),
        "trial_hours": round(float(trials["duration_s"].sum()) / 3600, 3),
        "front": [_row(r) for r in front.to_dict("records")],
        "most_accurate": _row(best.to_dict()),
        "fastest_within_1pt": _row(fastest.to_dict()),
        "speedup": round(speedup, 2),
        "val_drop_pts": round(100 * float(best["val_accuracy"] - fastest["val_accuracy"]), 2),
        "target_met": speedup >= SPEED_TARGET,
        "twice_as_fast": _row(twice[0]) if twice else None,
    }


def _row(row: dict) -> dict:
    keep = ("trial_id", "hp_image_size", "val_accuracy", "val_accuracy_low", "val_accuracy_high")
    keep += ("latency_ms", "latency_iqr_ms", "tflite_kb", "n_params", "best_epoch")
    found = {k: row.get(k) for k in keep}
    return {k: (None if _missing(v) else v) for k, v in found.items()} | {
        "hyperparameters": trial_hyperparameters(row)
    }


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def best_per_size(store: RunStore) -> dict[int, int]:
    """The most accurate complete trial at each image size (ties: lower val loss)."""
    done = store.trials()
    done = done[done["status"] == "complete"].sort_values(
        ["val_accuracy", "val_loss"], ascending=[False, True]
    )
    return {int(s): int(g.iloc[0]["trial_id"]) for s, g in done.groupby("hp_image_size")}


def quantized(store: RunStore, trial_id: int, *, search: Search, data: Path) -> dict:
    """int8 against float32 for `trial_id`'s model: its own if kept, else retrained pinned."""
    run_dir, trial, retrained = store.run_dir, trial_id, False
    try:
        store.model_path(trial_id)
    except Exception:  # not kept: train its configuration again, in a run of one trial
        run_dir, trial, retrained = _retrain(store, trial_id, search=search, data=data), None, True
    out = run_dir / "export-int8" / f"trial-{trial_id}" / "model.tflite"
    if not (out.parent / "quantized.json").exists():
        args = ["export", str(run_dir), "--format", "tflite", "--quantize", "int8"]
        args += ["--output", str(out)] + ([] if trial is None else ["--trial", str(trial)])
        run_cli(*args)
    figures = json.loads((out.parent / "quantized.json").read_text(encoding="utf-8"))
    return {"trial_id": trial_id, "retrained": retrained, **figures}


def _retrain(store: RunStore, trial_id: int, *, search: Search, data: Path) -> Path:
    row = store.trials().set_index("trial_id").loc[trial_id].to_dict()
    name = f"deploy-{search.key}-trial-{trial_id}"
    if not (store.run_dir.parent / name / "best_model.keras").exists():
        args = ["--space", search.space, "--data", str(data), "--name", name]
        args += ["--runs-dir", str(store.run_dir.parent), "--max-trials", "1", "--quiet"]
        args += ["--epochs", str(search.epochs), "--patience", "3"]
        args += ["--image-size", str(int(row["hp_image_size"]))]
        for hp, value in trial_hyperparameters(row).items():
            if hp != "image_size":
                args += ["--fix", f"{hp}={_as_text(value)}"]
        run_cli(*args + (["--weights", str(WEIGHTS)] if search.weights else []))
    return store.run_dir.parent / name


def _as_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def quantization_summary(entry: dict) -> dict:
    """float32 against int8 for one model: accuracy drop, size ratio, latency ratio."""
    models = entry["models"]
    f32, q = models["float32"], models["int8"]
    # Rounded before the comparison: on 200 test images one image is 0.5 points.
    drop = round(100 * (f32["test_accuracy"] - q["test_accuracy"]), 2)
    ratio = f32["tflite_kb"] / q["tflite_kb"]
    return {
        "accuracy_drop_pts": round(drop, 2),
        "size_ratio": round(ratio, 2),
        "latency_ratio": round(q["latency_ms"] / f32["latency_ms"], 2),
        "target_met": drop <= 1.0 and ratio >= SIZE_TARGET,
    }


def machine() -> dict:
    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "python": platform.python_version()}


def quick_data(target: Path) -> Path:
    """QUICK_IMAGES of each class from each split, as symlinks."""
    _, class_names, files = list_splits(DATA, 1337)
    for split in ("train", "validation"):
        by_class = {name: 0 for name in class_names}
        for path, label in files[split]:
            name = class_names[label]
            if by_class[name] < QUICK_IMAGES:
                (target / split / name).mkdir(parents=True, exist_ok=True)
                (target / split / name / path.name).symlink_to(path.resolve())
                by_class[name] += 1
    return target


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _interval(row: dict, column: str) -> str:
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    if low is None:
        return _pct(row.get(column))
    return f"{_pct(row.get(column))} [{100 * low:.1f}, {100 * high:.1f}]"


def _ms(row: dict) -> str:
    return f"{row['latency_ms']:.2f} ms (IQR {row['latency_iqr_ms']:.2f})"


def search_table(results: dict) -> list[str]:
    lines = [
        "| search | trials | trial-hours | most accurate | fastest on the front within 1 pt "
        "| speed-up (target >= 2x) | best front trial >= 2x faster |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["searches"].items():
        best, fast = entry["most_accurate"], entry["fastest_within_1pt"]
        verdict = (
            "met" if entry["target_met"] else f"missed by {SPEED_TARGET - entry['speedup']:.2f}x"
        )
        lines.append(
            f"| `{key}` | {entry['complete']} of {entry['trials']} | {entry['trial_hours']:.2f} "
            f"| trial {best['trial_id']}, {best['hp_image_size']} px: val "
            f"{_interval(best, 'val_accuracy')}, {_ms(best)} "
            f"| trial {fast['trial_id']}, {fast['hp_image_size']} px: val "
            f"{_interval(fast, 'val_accuracy')}, {_ms(fast)} "
            f"| {entry['speedup']:.2f}x at -{entry['val_drop_pts']:.2f} pts: {verdict} "
            f"| {_twice(entry)} |"
        )
    return lines


def _twice(entry: dict) -> str:
    """The front's most accurate trial at least 2x faster than the most accurate, and what it
    gives up: how far the speed target is from the accuracy one."""
    row, best = entry.get("twice_as_fast"), entry["most_accurate"]
    if row is None:
        return "none on the front"
    speedup = best["latency_ms"] / row["latency_ms"]
    drop = 100 * (best["val_accuracy"] - row["val_accuracy"])
    return (
        f"trial {row['trial_id']}, {row['hp_image_size']} px: {speedup:.1f}x faster at "
        f"-{drop:.2f} pts"
    )


def front_tables(results: dict) -> list[str]:
    lines = []
    for key, entry in results["searches"].items():
        lines += ["", f"Pareto front of `{key}` (fastest first):", ""]
        lines += ["| trial | size | val accuracy [95% CI] | latency | float32 TFLite |"]
        lines += ["|---|---|---|---|---|"]
        for row in entry["front"]:
            lines.append(
                f"| {row['trial_id']} | {row['hp_image_size']} px "
                f"| {_interval(row, 'val_accuracy')} | {_ms(row)} | {row['tflite_kb']:,.0f} KB |"
            )
    return lines


def quantization_table(results: dict) -> list[str]:
    lines = [
        "| size | trial | float32 test [95% CI] | int8 test [95% CI] | drop | float32 size "
        "| int8 size | smaller | float32 latency | int8 latency | target (<= 1 pt, >= 3x) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, entry in results["quantized"].items():
        f32, q = entry["models"]["float32"], entry["models"]["int8"]
        summary = entry["summary"]
        misses = []
        if summary["accuracy_drop_pts"] > 1.0:
            misses.append(f"drop over by {summary['accuracy_drop_pts'] - 1:.2f} pts")
        if summary["size_ratio"] < SIZE_TARGET:
            misses.append(f"size short by {SIZE_TARGET - summary['size_ratio']:.2f}x")
        verdict = "met" if summary["target_met"] else "missed: " + ", ".join(misses)
        retrained = " (retrained)" if entry["retrained"] else ""
        lines.append(
            f"| {size} px | {entry['trial_id']}{retrained} | {_interval(f32, 'test_accuracy')} "
            f"| {_interval(q, 'test_accuracy')} | {summary['accuracy_drop_pts']:+.2f} pts "
            f"| {f32['tflite_kb']:,.0f} KB | {q['tflite_kb']:,.0f} KB "
            f"| {summary['size_ratio']:.2f}x "
            f"| {_ms(f32)} | {_ms(q)} | {verdict} |"
        )
    return lines


def table(results: dict) -> str:
    m = results["machine"]
    head = [
        f"Measured {results['date']} on {m['cpu']} ({m['cpu_cores']} cores); latency is the "
        "TFLite interpreter on this CPU, one thread, batch 1, median of 30 runs after 5 warm-up "
        "runs, with the interquartile range. These are x86 figures: they say nothing of a "
        "phone's NPU or ARM cores.",
        "",
    ]
    quant_note = [
        "",
        "Float32 against int8 (full integer quantization, calibrated on 100 seeded training "
        "images), the most accurate transfer trial at each size, measured side by side by "
        "`export --quantize int8` on the test split. A trial whose model the search did not "
        "keep (not on the front) was retrained with its hyperparameters pinned (retrained).",
        "",
    ]
    body = head + search_table(results) + front_tables(results) + quant_note
    return "\n".join(body + quantization_table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and budgets")
    parser.add_argument("--out", type=Path, help="results folder (default: bench/results)")
    args = parser.parse_args()
    out = args.out or (REPO / "bench" / ("quick" if args.quick else "results"))
    readme = REPO / "bench" / "README.md" if not args.quick and not args.out else out / "README.md"
    runs = (REPO / "bench" / "runs") if not args.quick else out / "runs"
    data = DATA
    if args.quick:  # kept beside the runs, which resume only on the same data folder
        data = out / "data"
        if not data.exists():
            quick_data(data)
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "objectives": OBJECTIVES,
        "searches": {},
        "quantized": {},
    }
    for search in searches(args.quick):
        run_cli(*search_args(search, data, runs))
        store = RunStore(runs / f"deploy-{search.key}")
        results["searches"][search.key] = trade_off(store) | {"sizes": list(search.sizes)}
        if search.key != "transfer":
            continue
        for size, trial_id in sorted(best_per_size(store).items()):
            entry = quantized(store, trial_id, search=search, data=data)
            results["quantized"][str(size)] = entry | {"summary": quantization_summary(entry)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "deploy.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_block(readme, "deploy", table(results), title=f"## Deployment-aware search: `{SCRIPT}`")
    print(table(results))


if __name__ == "__main__":
    main()
