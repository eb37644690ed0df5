"""Search-speed benchmark (issue 5) on cats_and_dogs_filtered at 160 px, in one process run.

1. Trials per hour on the `transfer` space's frozen, unaugmented configurations
   (--fix mode=frozen and no augmentation, the trials the feature cache serves), same seed,
   trial count, epochs and patience for both:
   a. the naive anchor: a plain Keras Tuner `RandomSearch` whose HyperModel reads the images
      the documents' way, `image_dataset_from_directory(...).prefetch(AUTOTUNE)` in every
      trial, no cache;
   b. ours: `python run_search.py --space transfer --fix ...` as a user runs it (a fresh run
      directory and cache folder each time, so decoding and feature extraction are timed).
   Wall time covers the whole search; for ours also the process start, the test score and
   the report. Best val accuracy is read the same way for both: at each trial's lowest
   validation loss (the epoch EarlyStopping restores), on the same 800 validation images.
   Both arms run at least twice, alternated, and the table gives each arm's median with its
   min-max, and the speed-up with the range over every pairing of runs.
2. Input pipeline: a trial's model (the transfer space's default, frozen base with
   augmentation, so no cache applies) trained from our in-memory uint8 arrays, against the same
   model fed one batch already in memory as a tensor (the model-bound limit), and against
   `image_dataset_from_directory`; images/s from the epochs after the first.
3. Memory: resident memory after each of 30 short trials of the whole transfer space
   (frozen and fine-tuned, cached and not), read from the run's trials.csv.
4. On a GPU only: mixed precision against float32 images/s, fine-tuning MobileNetV2.

Writes bench/results/search_speed.json and the table in bench/README.md.

    python bench/search_speed.py            # 20 trials: about 75 minutes on 2 CPU cores
    python bench/search_speed.py --quick    # 32 px, 40 images a class, tiny budgets,
                                            # into bench/quick/: a minute or two
    python bench/search_speed.py --quick --trials 1 --rss-trials 0 --data DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # run as a script from anywhere
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import cpu_model, write_block  # noqa: E402

from search.backends.keras_tuner import OBJECTIVE  # noqa: E402
from search.data import list_splits, load_image_data  # noqa: E402
from search.fixed import parse_fixed, pinned_space  # noqa: E402
from search.inputs import training_dataset  # noqa: E402
from spaces import declared_space, transfer  # noqa: E402
from spaces.context import DEFAULT_BACKBONE, SpaceContext  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cats_and_dogs_filtered"
WEIGHTS = (
    REPO.parent
    / "shared"
    / "data"
    / "keras-models"
    / "mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5"
)
FROZEN_NO_AUGMENTATION = (
    "mode=frozen",
    "flip=none",
    "rotation=0",
    "zoom=0",
    "translation=0",
    "contrast=0",
)
SEED, SPLIT_SEED, BATCH = 42, 1337, 32
# --quick's budgets, on QUICK_IMAGES of each class per split: a minute or two on 2 CPU cores
# whatever the data, still two runs of each arm.
QUICK = {"trials": 2, "epochs": 2, "repeats": 2, "naive_repeats": 2, "rss_trials": 2}
QUICK_IMAGES = 40
TARGETS = {"speedup": 20.0, "accuracy_points": 0.5, "pipeline": 0.95, "rss_mb": 300.0}


def linked_split(root: Path, target: Path, per_class: int | None = None) -> Path:
    """Our train/validation split as a folder of symlinks, so the naive anchor reads exactly
    the images ours trains and validates on, with image_dataset_from_directory; `per_class`
    keeps only the first that many of each class in each split."""
    _, class_names, files = list_splits(root, SPLIT_SEED)
    for split in ("train", "validation"):
        kept: Counter[int] = Counter()
        for path, label in files[split]:
            kept[label] += 1
            if per_class is not None and kept[label] > per_class:
                continue
            folder = target / split / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).symlink_to(path.resolve())
    return target


def documents_dataset(folder: Path, size: int, shuffle: bool) -> tf.data.Dataset:
    """A split read as the documents read it: seeds 001-004 build every dataset with
    image_dataset_from_directory and then `.prefetch(buffer_size=AUTOTUNE)` (seed 000 uses
    Keras's older ImageDataGenerator, which has no tf.data pipeline to prefetch)."""
    dataset = keras.utils.image_dataset_from_directory(
        folder,
        label_mode="binary",
        image_size=(size, size),
        batch_size=BATCH,
        shuffle=shuffle,
        seed=SEED,
        verbose=False,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


class DocumentsWay(kt.HyperModel):
    """The transfer space, trained the way the documents read data: every trial builds its
    datasets with image_dataset_from_directory and decodes every JPEG in every epoch."""

    def __init__(self, ctx: SpaceContext, folder: Path):
        super().__init__(name="transfer")
        self.ctx, self.folder = ctx, folder

    def build(self, hp):
        return transfer.build(hp, self.ctx)

    def fit(self, hp, model, *args, **kwargs):
        train = documents_dataset(self.folder / "train", self.ctx.image_size, shuffle=True)
        validation = documents_dataset(self.folder / "validation", self.ctx.image_size, False)
        return model.fit(train, *args, validation_data=validation, **kwargs)


def naive_search(ctx, folder, pinned, trials, epochs, patience, directory) -> dict:
    tuner = kt.RandomSearch(
        DocumentsWay(ctx, folder),
        objective=OBJECTIVE,
        max_trials=trials,
        seed=SEED,
        hyperparameters=pinned,
        tune_new_entries=True,
        directory=str(directory),
        project_name="naive",
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    histories = []

    class Keep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            histories.append([])

        def on_epoch_end(self, epoch, logs=None):
            histories[-1].append(dict(logs))

    start = time.perf_counter()
    tuner.search(epochs=epochs, callbacks=[stop, Keep()], verbose=0)
    wall = time.perf_counter() - start
    trials_done = tuner.oracle.get_best_trials(trials)
    points = [t.hyperparameters.values for t in sorted(trials_done, key=lambda t: int(t.trial_id))]
    best = [min(h, key=lambda r: r["val_loss"])["val_accuracy"] for h in histories]
    return {
        "wall_s": round(wall, 1),
        "trials": len(histories),
        "trials_per_hour": round(len(histories) / wall * 3600, 1),
        "best_val_accuracy": round(max(best), 4),
        "epochs_trained": sum(len(h) for h in histories),
        "points": points,
    }


def our_search(trials, epochs, patience, size, data: Path, runs: Path, name: str, extra=()) -> dict:
    command = [
        *(sys.executable, str(REPO / "run_search.py"), "--space", "transfer"),
        *("--data", str(data), "--weights", str(WEIGHTS), "--image-size", str(size)),
        *("--max-trials", str(trials), "--epochs", str(epochs), "--patience", str(patience)),
        *("--seed", str(SEED), "--batch-size", str(BATCH)),
        *("--runs-dir", str(runs), "--name", name, "--cache-dir", str(runs / f"{name}-cache")),
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    frame = pd.read_csv(runs / name / "trials.csv")
    epochs_frame = pd.read_csv(runs / name / "epochs.csv")
    return {
        "wall_s": round(wall, 1),
        "trials": len(frame),
        "trials_per_hour": round(len(frame) / wall * 3600, 1),
        "best_val_accuracy": round(float(frame["val_accuracy"].max()), 4),
        "epochs_trained": len(epochs_frame),
        "features": [f if isinstance(f, str) else "" for f in frame.get("features", [])],
        "rss_mb": frame["rss_mb"].tolist(),
        "statuses": frame["status"].tolist(),
        "points": [
            {c[3:]: v for c, v in row.items() if c.startswith("hp_") and pd.notna(v)}
            for row in frame.to_dict("records")
        ],
    }


def same_points(naive: list[dict], ours: list[dict]) -> bool:
    """Whether both searches tried the same hyperparameters in the same order."""

    def norm(point: dict) -> dict:
        return {
            k: round(float(v), 9) if isinstance(v, int | float) else str(v)
            for k, v in point.items()
            if not k.startswith("tuner/")
        }

    return len(naive) == len(ours) and all(
        norm(a) == norm(b) for a, b in zip(naive, ours, strict=True)
    )


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _images_per_s(model_fit, n_images: int, epochs: int) -> float:
    times = EpochTimes()
    model_fit(times, epochs)
    return round(n_images / statistics.median(times.seconds[1:]), 1)


def memory_growth(trials: int, size: int, data: Path, scratch: Path) -> dict:
    """Resident memory after each of `trials` one-epoch trials of the whole transfer space;
    0 trials leaves the part out (tests/test_bench.py does)."""
    if not trials:
        return {"status": "not run (--rss-trials 0)"}
    print("memory", flush=True)
    whole = our_search(trials, 1, 1, size, data, scratch / "runs", "rss")
    rss = whole["rss_mb"]
    return {
        "status": "run",
        "trials": len(rss),
        "image_size": size,
        "first_mb": rss[0],
        "last_mb": rss[-1],
        "max_mb": max(rss),
        "growth_mb": round(rss[-1] - rss[0], 1),
        "per_trial_mb": rss,
        "statuses": whole["statuses"],
        "features": whole["features"],
    }


def pipeline_speed(ctx: SpaceContext, root: Path, folder: Path, epochs: int) -> dict:
    """Images/s of one trial's model fed three ways, after the first epoch."""
    data = load_image_data(root, ctx.image_size, split_seed=SPLIT_SEED)
    x, y = data.train.x, data.train.y
    steps = len(y) // BATCH

    def model():
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        return transfer.build(kt.HyperParameters(), ctx)  # frozen, with augmentation

    def ours(times, n):  # as search/trial.py feeds a trial
        dataset = training_dataset(x, y, BATCH, seed=SEED)
        model().fit(dataset, epochs=n, callbacks=[times], verbose=0)

    def keras_arrays(times, n):  # Keras's own NumPy adapter
        model().fit(x, y, batch_size=BATCH, epochs=n, shuffle=True, callbacks=[times], verbose=0)

    def bound(times, n):
        batch = (tf.constant(x[:BATCH]), tf.constant(y[:BATCH]))
        dataset = tf.data.Dataset.from_tensors(batch).repeat(steps)
        model().fit(dataset, epochs=n, callbacks=[times], verbose=0)

    def documents(times, n):
        dataset = documents_dataset(folder / "train", ctx.image_size, shuffle=True)
        model().fit(dataset, epochs=n, callbacks=[times], verbose=0)

    limit = _images_per_s(bound, steps * BATCH, epochs)
    ours_speed = _images_per_s(ours, len(y), epochs)
    arrays_speed = _images_per_s(keras_arrays, len(y), epochs)
    documents_speed = _images_per_s(documents, len(y), epochs)
    return {
        "model": "transfer default: augmentation, preprocessing, frozen MobileNetV2, head",
        "model_bound_images_per_s": limit,
        "ours_images_per_s": ours_speed,
        "ours_fraction_of_limit": round(ours_speed / limit, 3),
        "keras_numpy_images_per_s": arrays_speed,
        "keras_numpy_fraction_of_limit": round(arrays_speed / limit, 3),
        "documents_images_per_s": documents_speed,
        "documents_fraction_of_limit": round(documents_speed / limit, 3),
        "epochs_timed": epochs - 1,
    }


def precision_speed(size: int, epochs: int) -> dict:
    """Mixed precision against float32, fine-tuning the whole of MobileNetV2; GPU only."""
    if not tf.config.list_physical_devices("GPU"):
        return {"status": "not run: no GPU on this machine"}
    x = np.random.default_rng(0).integers(0, 256, (2048, size, size, 3), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 2, 2048)
    speeds = {}
    for policy in ("float32", "mixed_float16"):
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(policy)
        hp = kt.HyperParameters()
        hp.values.update({"mode": "fine_tune", "fine_tune_at": 0})
        weights = "imagenet" if not WEIGHTS.exists() else str(WEIGHTS)
        model = transfer.build(hp, SpaceContext(size, 2, DEFAULT_BACKBONE.with_weights(weights)))
        transfer.fine_tune(hp, model)
        times = EpochTimes()
        model.fit(x, y, batch_size=64, epochs=epochs, callbacks=[times], verbose=0)
        speeds[policy] = round(len(y) / statistics.median(times.seconds[1:]), 1)
    keras.mixed_precision.set_global_policy("float32")
    return {
        "status": "run",
        "float32_images_per_s": speeds["float32"],
        "mixed_float16_images_per_s": speeds["mixed_float16"],
        "ratio": round(speeds["mixed_float16"] / speeds["float32"], 2),
    }


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_tuner": kt.__version__,
    }


def summarize(naive: list[dict], ours: list[dict], pipeline: dict, rss: dict, gpu: dict) -> dict:
    naive_rates = [r["trials_per_hour"] for r in naive]
    ours_rates = [r["trials_per_hour"] for r in ours]
    naive_rate = round(statistics.median(naive_rates), 1)  # of two runs: their mean
    ours_rate = round(statistics.median(ours_rates), 1)
    naive_best = statistics.median(r["best_val_accuracy"] for r in naive)
    ours_best = statistics.median(r["best_val_accuracy"] for r in ours)
    return {
        "naive_runs": len(naive),
        "ours_runs": len(ours),
        "naive_trials_per_hour": naive_rate,
        "naive_trials_per_hour_range": [min(naive_rates), max(naive_rates)],
        "ours_trials_per_hour": ours_rate,
        "ours_trials_per_hour_range": [min(ours_rates), max(ours_rates)],
        "speedup": round(ours_rate / naive_rate, 1),
        # Over every pairing of one run of ours with one of the anchor's.
        "speedup_range": [
            round(min(ours_rates) / max(naive_rates), 1),
            round(max(ours_rates) / min(naive_rates), 1),
        ],
        "naive_best_val_accuracy": naive_best,
        "ours_best_val_accuracy": ours_best,
        "accuracy_difference_points": round((ours_best - naive_best) * 100, 2),
        "pipeline_fraction_of_limit": pipeline["ours_fraction_of_limit"],
        "rss_growth_mb": rss.get("growth_mb"),
        "mixed_precision_ratio": gpu.get("ratio"),
    }


def table(results: dict) -> str:
    s, m, p, r = results["summary"], results["machine"], results["pipeline"], results["memory"]
    gpu = results["gpu"]
    budget = results["budget"]
    naive, ours = results["naive"], results["ours"]

    def walls(runs):
        return ", ".join(f"{x['wall_s']:.0f}" for x in runs)

    def spread(median: float, bounds: list[float], unit: str = "") -> str:
        return f"{median}{unit} ({bounds[0]}\u2013{bounds[1]}{unit})"

    lines = [
        f"Measured {results['date']} on {m['cpu']} ({m['cpu_cores']} cores, {m['memory_gib']} GiB"
        f", {'GPU: ' + ', '.join(m['gpus']) if m['gpus'] else 'no GPU'}), TensorFlow "
        f"{m['tensorflow']}, Keras {m['keras']}. {budget['image_size']} px, {budget['trials']} "
        f"trials of {budget['epochs']} epochs (patience {budget['patience']}), seed {SEED}; "
        f"ours repeated {len(ours)}x, the naive anchor (image_dataset_from_directory with "
        f"prefetch) {len(naive)}x, alternated; medians, with min\u2013max over the runs.",
        "",
        "| measure | naive Keras Tuner | ours | target |",
        "|---|---|---|---|",
        f"| trials/hour (frozen, no augmentation): median (min\u2013max) | "
        f"{spread(s['naive_trials_per_hour'], s['naive_trials_per_hour_range'])} | "
        f"{spread(s['ours_trials_per_hour'], s['ours_trials_per_hour_range'])} | "
        f"ours >= {TARGETS['speedup']:.0f}x naive |",
        f"| speed-up: ratio of medians (range over every pairing of runs) | | "
        f"**{s['speedup']}x** ({s['speedup_range'][0]}\u2013{s['speedup_range'][1]}x) | "
        f">= {TARGETS['speedup']:.0f}x |",
        f"| wall time per search, s (each run) | {walls(naive)} | {walls(ours)} | |",
        f"| best val accuracy | {s['naive_best_val_accuracy']:.4f} | "
        f"{s['ours_best_val_accuracy']:.4f} ({s['accuracy_difference_points']:+.2f} points) | "
        f"within {TARGETS['accuracy_points']} points |",
        f"| same hyperparameters tried, in order | | {results['same_points']} | |",
        f"| training images/s (model-bound limit {p['model_bound_images_per_s']}) | "
        f"{p['documents_images_per_s']} ({p['documents_fraction_of_limit']:.0%}) | "
        f"{p['ours_images_per_s']} ({p['ours_fraction_of_limit']:.0%}) | >= 95% of the limit |",
        f"| training images/s, Keras's NumPy adapter | | {p['keras_numpy_images_per_s']} "
        f"({p['keras_numpy_fraction_of_limit']:.0%}) | |",
        f"| RSS over {r['trials']} trials, MiB | | {r['first_mb']} -> {r['last_mb']} "
        f"(growth {r['growth_mb']:+}, peak {r['max_mb']}) | growth < {TARGETS['rss_mb']:.0f} |"
        if r["status"] == "run"
        else f"| RSS, MiB | | {r['status']} | growth < {TARGETS['rss_mb']:.0f} |",
        f"| GPU mixed precision / float32 | | {gpu.get('ratio', gpu['status'])} | >= 1.8x |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (at least 2)")
    parser.add_argument(
        "--naive-repeats", type=int, default=2, help="runs of the naive anchor (at least 2)"
    )
    parser.add_argument(
        "--rss-trials", type=int, default=30, help="trials of the memory part (0 skips it)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="32 px, tiny budgets: checks the script"
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="image folder (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for search_speed.json and a README.md with the table "
        "(default: bench/results and bench/README.md; bench/quick with --quick)",
    )
    args = parser.parse_args()
    if args.quick:  # tiny budgets by default; a value given on the command line still wins
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    size = 32 if args.quick else 160
    if min(args.repeats, args.naive_repeats) < 2:
        parser.error("both arms run at least twice, so that the table shows their spread")
    results_dir = REPO / "bench" / "results"
    out = (args.out or (REPO / "bench" / "quick" if args.quick else results_dir)).resolve()
    # The committed table lives in bench/README.md; any other folder gets a README of its own.
    readme = REPO / "bench" / "README.md" if out == results_dir else out / "README.md"
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(SEED)
    ctx = SpaceContext(size, 2, DEFAULT_BACKBONE.with_weights(str(WEIGHTS)))
    fixed = parse_fixed(FROZEN_NO_AUGMENTATION, declared_space(transfer.SPACE, ctx))
    pinned = pinned_space(declared_space(transfer.SPACE, ctx), fixed)
    fix_args = [part for pair in FROZEN_NO_AUGMENTATION for part in ("--fix", pair)]
    with tempfile.TemporaryDirectory(prefix="search-speed-") as scratch:
        scratch = Path(scratch)
        data = args.data
        if args.quick:  # a few images of each class, so the check is quick whatever the data
            data = linked_split(args.data, scratch / "quick-data", QUICK_IMAGES)
        folder = linked_split(data, scratch / "split")
        budget = (args.trials, args.epochs, args.patience)
        naive, ours = [], []
        # Alternated, so a slow spell of the machine touches both.
        for index in range(max(args.repeats, args.naive_repeats)):
            if index < args.naive_repeats:
                print(f"naive run {index + 1}", flush=True)
                naive.append(naive_search(ctx, folder, pinned, *budget, scratch / f"kt{index}"))
            if index < args.repeats:
                print(f"our run {index + 1}", flush=True)
                runs = scratch / "runs"
                ours.append(our_search(*budget, size, data, runs, f"ours{index}", fix_args))
        print("input pipeline", flush=True)
        pipeline = pipeline_speed(ctx, data, folder, epochs=2 if args.quick else 6)
        memory = memory_growth(args.rss_trials, 32 if args.quick else 64, data, scratch)
    gpu = precision_speed(size, 3)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "budget": {
            "image_size": size,
            "trials": args.trials,
            "epochs": args.epochs,
            "patience": args.patience,
            "fixed": list(FROZEN_NO_AUGMENTATION),
            "data": str(args.data),
            "images_per_class": QUICK_IMAGES if args.quick else None,  # per split; None: all
            "naive_input": "image_dataset_from_directory(...).prefetch(tf.data.AUTOTUNE)",
        },
        "naive": naive,
        "ours": ours,
        "same_points": same_points(naive[0]["points"], ours[0]["points"]),
        "pipeline": pipeline,
        "memory": memory,
        "gpu": gpu,
    }
    results["summary"] = summarize(naive, ours, pipeline, memory, gpu)
    (out / "search_speed.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_block(readme, "speed", table(results))
    print(table(results))


if __name__ == "__main__":
    main()
