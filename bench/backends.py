"""Keras-backend benchmark (issue 34): the models the search trains, on TensorFlow, PyTorch and
JAX side by side in one run, at 160 px on 160 training photos of cats_and_dogs_filtered.

1. Training images/s of one epoch after a warm-up epoch, batch 32, for the documents' CNN
   (preset seed000_cnn), keras.io's small Xception (seed004_small_xception), MobileNetV2 frozen
   without augmentation (trained on images, and its head on cached features, search/features.py)
   and MobileNetV2 fine-tuned from layer 100 (tf_transfer_fine_tune). Every model is built by
   the project's own space code at fixed hyperparameters and fed by search.inputs, as a trial is.
2. The input pipeline's share of model-bound speed per backend: the documents' CNN fed by
   search.inputs.training_dataset against the same model fed one batch made ready beforehand
   (a backend tensor), repeated.
3. Time to the first trial: `run_search.py` from process start to its first trial's line
   (imports, device start, building, compiling and one epoch), images already decoded.

Each measurement is a fresh child process (this script with --child) with KERAS_BACKEND set;
each round runs every case on every backend, the backends' order rotating from round to round,
so a slow spell of the shared machine touches all of them. Writes bench/results/backends.json
and the table in bench/README.md.

    python bench/backends.py               # 2 rounds: about 25 minutes on 2 shared CPU cores
    python bench/backends.py --quick       # 32 px, 64 images, 1 round: checks the script
    python bench/backends.py --quick --backends tensorflow torch --cases cnn --data DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # run as a script from anywhere

from common import cpu_model, write_block  # noqa: E402

from search.data import list_splits, load_image_data  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DATA = SHARED / "cats_and_dogs_filtered"
WEIGHTS = SHARED / "keras-models" / "mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5"
BACKENDS = ("tensorflow", "torch", "jax")
# The slowest last, so a run cut short has the others. "frozen" measures "frozen_cached" too.
CASES = ("cnn", "frozen", "fine_tune", "xception")
TITLES = {
    "cnn": "the documents' 3-block CNN (seed000_cnn)",
    "xception": "keras.io's small Xception (seed004_small_xception)",
    "frozen": "MobileNetV2 frozen + head, on images",
    "frozen_cached": "MobileNetV2 frozen + head, on cached features",
    "fine_tune": "MobileNetV2 fine-tuned from layer 100 (tf_transfer_fine_tune)",
}
FROZEN_NO_AUGMENTATION = {
    "flip": "none",
    "rotation": 0.0,
    "zoom": 0.0,
    "translation": 0.0,
    "contrast": 0.0,
    "mode": "frozen",
}
SEED, SPLIT_SEED, BATCH = 42, 1337, 32
# 160 training images, not the 640 planned: on this shared 2-core VM an epoch ran at a tenth of
# the speed measured earlier (the CNN at 16-18 images/s), and the whole run must take about 25
# minutes. The validation images are for the command line's first trial.
TRAIN_PER_CLASS, VALIDATION_PER_CLASS = 80, 25
QUICK_PER_CLASS, QUICK_VALIDATION = 32, 10
# Head epochs on cached features take milliseconds: the median of several, after the warm-up.
CACHED_EPOCHS = 5
PIPELINE_TARGET = 0.95
FIRST_TRIAL_LINE = re.compile(r"^trial \d+ .*\bval_acc=")
CHILD_TIMEOUT_S = 900
# (backend, case): fewer training images where one epoch is slow (recorded in the JSON).
# keras.io's small Xception trains at under 1 image/s at 160 px on every backend here (about 11
# GFLOP an image): one batch an epoch.
SLOW_IMAGES = {(backend, "xception"): BATCH for backend in BACKENDS}
# Measurements left out, and why.
LEFT_OUT = {
    ("jax", "xception"): "0.1 images/s in a first, interrupted run of this script on the "
    "same machine (a 32-image epoch in about 5 minutes, its warm-up as long, 6.4 GB resident, "
    "against 0.6 on TensorFlow and 0.4 on PyTorch there): two runs would take most of the "
    "budget",
}
TITLE = "## Keras backends: `bench/backends.py`"
NOISE = (
    "The machine is a shared 2-core VM on which other engineers ran tests during this run, so "
    "single figures carry their noise; the rounds interleave the backends, so the ratios within "
    "one run are what count."
)


# ---- the child: one measurement on the backend KERAS_BACKEND names ----


def child(case: str, args: argparse.Namespace) -> list[dict]:
    """The figures of `case` (of "frozen": on images and on cached features, one model),
    measured in this process on the active Keras backend."""
    import keras

    keras.utils.set_random_seed(SEED)
    data = load_image_data(args.data, args.size, split_seed=SPLIT_SEED, cache_dir=args.cache)
    x, y = _subset(data.train.x, data.train.y, args.images)
    model = _model(case, args.size, len(y))
    found = {case: (_with_pipeline_share if case == "cnn" else _plain)(model, x, y)}
    if case == "frozen":
        found["frozen_cached"] = _cached(model, data)
    backend = keras.backend.backend()
    return [{"case": name, "backend": backend, **rows} for name, rows in found.items()]


def _subset(x, y, images: int):
    """`images` training rows spread over both classes (the list is in class order), in memory."""
    import numpy as np

    rows = np.sort(np.random.default_rng(SEED).permutation(len(y))[:images])
    return np.ascontiguousarray(x[rows]), np.ascontiguousarray(y[rows])


def _context(size: int, train_images: int):
    from spaces.context import DEFAULT_BACKBONE, SpaceContext

    backbone = DEFAULT_BACKBONE.with_weights(str(WEIGHTS) if WEIGHTS.exists() else "imagenet")
    return SpaceContext(size, 2, backbone, train_steps=train_images // BATCH)


def _model(case: str, size: int, train_images: int):
    """The case's model as the search builds it: its space's build at fixed values."""
    import keras_tuner as kt

    from spaces import transfer
    from spaces.baselines import build_preset, preset_hyperparameters

    ctx = _context(size, train_images)
    if case == "cnn":
        return build_preset("seed000_cnn", ctx)
    if case == "xception":
        return build_preset("seed004_small_xception", ctx)
    if case == "fine_tune":
        hp = preset_hyperparameters("tf_transfer_fine_tune")
        model = transfer.build(hp, ctx)
        transfer.fine_tune(hp, model)  # the second stage: unfrozen from layer 100, recompiled
        return model
    hp = kt.HyperParameters()
    hp.values.update(FROZEN_NO_AUGMENTATION)
    return transfer.build(hp, ctx)


def _epoch_seconds(model, dataset, epochs: int) -> list[float]:
    """Each epoch's training seconds (no validation pass), from the epoch callbacks."""
    import keras

    seconds: list[float] = []

    class Times(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(dataset, epochs=epochs, callbacks=[Times()], shuffle=False, verbose=0)
    return seconds


def _plain(model, x, y) -> dict:
    from search.inputs import training_dataset

    warm_up, timed = _epoch_seconds(model, training_dataset(x, y, BATCH, seed=SEED), 2)
    return {
        "images": len(y),
        "images_per_s": round(len(y) / timed, 1),
        "epoch_s": round(timed, 2),
        "warm_up_s": round(warm_up, 2),
    }


def _same_batch(x, y, steps: int):
    """One batch made ready for the backend beforehand, `steps` times: the model-bound feed."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors((tf.constant(x), tf.constant(y))).repeat(steps)
    batch = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))

    class SameBatch(keras.utils.PyDataset):  # no worker threads: nothing to overlap
        def __len__(self) -> int:
            return steps

        def __getitem__(self, index: int):
            return batch

    return SameBatch()


def _with_pipeline_share(model, x, y) -> dict:
    """The plain figures, then an epoch of the same model fed one ready batch, after one step
    of it alone (TensorFlow traces the step again for the batch's fixed shape)."""
    from search.inputs import training_dataset

    steps = len(y) // BATCH
    warm_up, fed = _epoch_seconds(model, training_dataset(x, y, BATCH, seed=SEED), 2)
    _epoch_seconds(model, _same_batch(x[:BATCH], y[:BATCH], 1), 1)
    (bound,) = _epoch_seconds(model, _same_batch(x[:BATCH], y[:BATCH], steps), 1)
    return {
        "images": len(y),
        "images_per_s": round(len(y) / fed, 1),
        "epoch_s": round(fed, 2),
        "warm_up_s": round(warm_up, 2),
        "model_bound_images_per_s": round(steps * BATCH / bound, 1),
        "pipeline_share": round(bound * len(y) / (fed * steps * BATCH), 3),
    }


def _cached(model, data) -> dict:
    """The frozen model's head on the base's features of every training image, as
    search/frozen_head.py trains it; the feature pass (once per run, over train and
    validation) is timed apart."""
    import keras

    from search.features import FeatureCache, split_frozen_base
    from search.frozen_head import HEAD_STEPS_PER_EXECUTION
    from search.inputs import training_dataset

    # Keras's PyTorch trainer refuses steps_per_execution > 1.
    steps = 1 if keras.backend.backend() == "torch" else HEAD_STEPS_PER_EXECUTION
    split = split_frozen_base(model)
    cache = FeatureCache(data, cache_dir=None)
    start = time.perf_counter()
    features, _ = cache.features(split, cache.key(split))
    pass_s = time.perf_counter() - start
    passed = len(data.train.y) + len(data.validation.y)
    split.head.compile(
        optimizer=model.optimizer,
        loss=model.loss,
        metrics=["accuracy"],
        steps_per_execution=steps,
    )
    train = training_dataset(features["train"], data.train.y, BATCH, seed=SEED)
    seconds = _epoch_seconds(split.head, train, 1 + CACHED_EPOCHS)
    timed = statistics.median(seconds[1:])
    return {
        "images": len(data.train.y),
        "images_per_s": round(len(data.train.y) / timed, 1),
        "epoch_s": round(timed, 4),
        "warm_up_s": round(seconds[0], 2),
        "timed_epochs": CACHED_EPOCHS,
        "steps_per_execution": steps,
        "feature_pass_images": passed,
        "feature_pass_s": round(pass_s, 2),
        "feature_pass_images_per_s": round(passed / pass_s, 1),
    }


def child_versions() -> dict:
    import keras

    backend = keras.backend.backend()
    library = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend]
    return {
        "keras": keras.__version__,
        library: __import__(library).__version__,
        "python": platform.python_version(),
    }


# ---- the parent: rounds of child processes ----


def link_split(root: Path, target: Path, train: int, validation: int) -> Path:
    """Our train/validation split of `root`, `train` and `validation` photos a class, as a
    folder of symlinks that both the children and the command line read."""
    _, class_names, files = list_splits(root, SPLIT_SEED)
    for split, keep in (("train", train), ("validation", validation)):
        kept = dict.fromkeys(range(len(class_names)), 0)
        for path, label in files[split]:
            if kept[label] == keep:
                continue
            kept[label] += 1
            folder = target / split / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).symlink_to(path.resolve())
    return target


def run_child(backend: str, case: str, args, folder: Path, cache: Path, images: int) -> dict:
    command = [
        *(sys.executable, str(Path(__file__).resolve()), "--child", case),
        *("--data", str(folder), "--cache", str(cache), "--size", str(args.size)),
        *("--images", str(images)),
    ]
    env = os.environ | {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=REPO
    )
    if done.returncode:
        raise RuntimeError(f"{backend} {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_trial(backend: str, folder: Path, cache: Path, runs: Path, size: int, name: str) -> dict:
    """`run_search.py` as a user starts it: seconds from the process start to its first
    trial's line, and to its end (test score and report included)."""
    command = [
        *(sys.executable, str(REPO / "run_search.py"), "--space", "scratch"),
        *("--data", str(folder), "--image-size", str(size), "--cache-dir", str(cache)),
        *("--epochs", "1", "--max-trials", "1", "--batch-size", str(BATCH), "--seed", str(SEED)),
        *("--runs-dir", str(runs), "--name", name),
    ]
    env = os.environ | {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    seen = None
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    ) as process:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if seen is None and FIRST_TRIAL_LINE.search(line):
                seen = time.perf_counter() - start
        status = process.wait(timeout=CHILD_TIMEOUT_S)
    if status or seen is None:
        raise RuntimeError(f"{backend} first trial failed:\n{''.join(lines)[-3000:]}")
    return {"first_trial_s": round(seen, 1), "process_s": round(time.perf_counter() - start, 1)}


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3 if max(values) < 10 else 1),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def summarize(measurements: list[dict], first: list[dict], backends, cases) -> dict:
    """Per case and backend the spread of images/s over the rounds; the pipeline's share and
    the time to the first trial per backend."""
    by = {
        case: {
            backend: [m for m in measurements if (m["case"], m["backend"]) == (case, backend)]
            for backend in backends
        }
        for case in cases
    }
    speed = {
        case: {
            backend: spread([m["images_per_s"] for m in rows]) | {"images": rows[0]["images"]}
            for backend, rows in found.items()
            if rows
        }
        for case, found in by.items()
    }
    pipeline = {
        backend: spread([m["pipeline_share"] for m in rows])
        | {"target": PIPELINE_TARGET, "met": min(m["pipeline_share"] for m in rows) >= 0.95}
        for backend, rows in by.get("cnn", {}).items()
        if rows
    }
    starts = {
        backend: {
            "first_trial_s": spread([f["first_trial_s"] for f in first if f["backend"] == backend]),
            "process_s": spread([f["process_s"] for f in first if f["backend"] == backend]),
        }
        for backend in backends
        if any(f["backend"] == backend for f in first)
    }
    return {"images_per_s": speed, "pipeline_share": pipeline, "first_trial": starts}


def _cell(found: dict | None, unit: str = "") -> str:
    if not found:
        return "-"
    return f"{found['median']}{unit} ({found['min']}\u2013{found['max']}{unit})"


def table(results: dict) -> str:
    summary, settings, machine = results["summary"], results["settings"], results["machine"]
    backends = settings["backends"]
    versions = results["versions"]
    names = {b: f"{b} {versions[b].get(b, '')}".strip() for b in backends if b in versions}
    head = [names.get(b, b) for b in backends]
    lines = [
        f"Measured {results['date']} on {machine['cpu']} ({machine['cpu_cores']} cores, no GPU), "
        f"Python {machine['python']}, Keras {machine['keras']}. {settings['image_size']} px, "
        f"{settings['images']} training images, batch {BATCH}, {settings['rounds']} rounds "
        f"(a fresh process per measurement, the backends' order rotating); median (min\u2013max) "
        f"over the rounds. {results['elapsed_s'] / 60:.1f} minutes in all"
        + ("." if results["complete"] else ", cut short: a bracket gives a cell's runs."),
        "",
        f"| training images/s | {' | '.join(head)} |",
        f"|---|{'---|' * len(backends)}",
    ]
    for case, found in summary["images_per_s"].items():
        cells = []
        for backend in backends:
            cell = found.get(backend)
            text = _cell(cell)
            if cell and cell["images"] != settings["images"]:
                text += f" [{cell['images']} images]"
            if cell and cell["runs"] < settings["rounds"]:
                text += f" [{cell['runs']} run]"
            cells.append(text)
        lines.append(f"| {TITLES[case]} | {' | '.join(cells)} |")
    share = summary["pipeline_share"]
    if share:
        cells = [
            f"{share[b]['median']:.0%} ({share[b]['min']:.0%}\u2013{share[b]['max']:.0%})"
            if b in share
            else "-"
            for b in backends
        ]
        lines.append(
            f"| input pipeline / one ready batch, CNN (target \u2265 {PIPELINE_TARGET:.0%}) | "
            f"{' | '.join(cells)} |"
        )
    starts = summary["first_trial"]
    if starts:
        cells = [_cell(starts.get(b, {}).get("first_trial_s"), unit=" s") for b in backends]
        lines.append(
            f"| process start \u2192 first trial's line, `run_search.py` scratch 1 epoch | "
            f"{' | '.join(cells)} |"
        )
    lines += ["", *(f"- Left out, {k}: {why}." for k, why in settings["left_out"].items())]
    return "\n".join(lines)


def machine() -> dict:
    import importlib.metadata as metadata

    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "keras": metadata.version("keras"),
    }


def reported(cases: list[str]) -> list[str]:
    """The table's rows of `cases`: the frozen child measures the cached head too."""
    return [row for case in cases for row in (case, *(["frozen_cached"] * (case == "frozen")))]


def images_for(backend: str, case: str, images: int, quick: bool) -> int:
    """The training images of a measurement: fewer only for the slowest (say so in the JSON)."""
    return images if quick else min(images, SLOW_IMAGES.get((backend, case), images))


def measure_all(args, folder: Path, scratch: Path, save) -> None:
    """Every round's measurements, the first trial before the slowest case; `save(measurements,
    first, versions, done)` after each, so a run cut short keeps what it measured."""
    cache = scratch / "cache"
    load_image_data(folder, args.size, split_seed=SPLIT_SEED, cache_dir=cache)  # decoded once
    measurements, first, versions = [], [], {}
    for index in range(args.rounds):
        turn = index % len(args.backends)
        order = [*args.backends[turn:], *args.backends[:turn]]
        steps = [(case, backend) for case in args.cases for backend in order]
        if args.first_trial:
            steps[-len(order) : -len(order)] = [("first trial", backend) for backend in order]
        for case, backend in steps:
            if (backend, case) in LEFT_OUT and not args.quick:
                continue
            print(f"round {index + 1}: {case} on {backend}", flush=True)
            if case == "first trial":
                name = f"first-{backend}-{index}"
                found = first_trial(backend, folder, cache, scratch / "runs", args.size, name)
                first.append(found | {"backend": backend, "round": index + 1})
                print(f"  {found['first_trial_s']} s", flush=True)
            else:
                images = images_for(backend, case, args.images, args.quick)
                found = run_child(backend, case, args, folder, cache, images)
                versions.setdefault(backend, found["versions"])
                for row in found["rows"]:
                    measurements.append(row | {"round": index + 1})
                    print(f"  {row['case']}: {row['images_per_s']} images/s", flush=True)
            save(measurements, first, versions, False)
    save(measurements, first, versions, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of every measurement (>= 2)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--no-first-trial", dest="first_trial", action="store_false")
    parser.add_argument("--quick", action="store_true", help="32 px, 64 images, 1 round")
    parser.add_argument("--data", type=Path, default=DATA, help="image folder (%(default)s)")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for backends.json and a README.md with the table (default: bench/results "
        "and bench/README.md; bench/quick with --quick)",
    )
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"rows": child(args.child, args), "versions": child_versions()}))
        return
    args.size = 32 if args.quick else 160
    per_class, validation = (
        (QUICK_PER_CLASS, QUICK_VALIDATION)
        if args.quick
        else (
            TRAIN_PER_CLASS,
            VALIDATION_PER_CLASS,
        )
    )
    args.images = 2 * per_class
    if args.quick:
        args.rounds = 1
    elif args.rounds < 2:
        parser.error("every measurement runs at least twice, so that the table shows its spread")
    results_dir = REPO / "bench" / "results"
    out = (args.out or (REPO / "bench" / "quick" if args.quick else results_dir)).resolve()
    readme = REPO / "bench" / "README.md" if out == results_dir else out / "README.md"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def save(measurements: list[dict], first: list[dict], versions: dict, done: bool) -> None:
        results = results_of(args, measurements, first, versions)
        results |= {"complete": done, "elapsed_s": round(time.perf_counter() - started, 1)}
        (out / "backends.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        write_block(readme, "backends", table(results), title=TITLE)
        if done:
            print(table(results))

    with tempfile.TemporaryDirectory(prefix="backends-") as scratch:
        scratch = Path(scratch)
        folder = link_split(args.data, scratch / "data", per_class, validation)
        measure_all(args, folder, scratch, save)


def results_of(args, measurements: list[dict], first: list[dict], versions: dict) -> dict:
    cases = reported(args.cases)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions,
        "settings": {
            "image_size": args.size,
            "images": args.images,
            "batch_size": BATCH,
            "rounds": args.rounds,
            "backends": args.backends,
            "cases": {case: TITLES[case] for case in cases},
            "data": str(args.data),
            "images_note": "160 training images, not the 640 planned: on this shared 2-core "
            "VM, loaded by others' tests, an epoch ran at about a tenth of the speed measured "
            "before (the CNN at 14-18 images/s on TensorFlow), and the whole run had to take "
            "about 25 minutes",
            "fewer_images": {
                f"{b} {c}": images_for(b, c, args.images, args.quick)
                for b in args.backends
                for c in args.cases
                if images_for(b, c, args.images, args.quick) != args.images
            },
            "left_out": {f"{b} {c}": why for (b, c), why in LEFT_OUT.items() if not args.quick},
            "timed": "one training epoch after a warm-up epoch, without a validation pass; "
            f"cached features: the median of {CACHED_EPOCHS} head epochs after the warm-up",
            "pipeline_share": "the CNN's timed epoch fed by search.inputs.training_dataset, "
            "against an epoch of the same model fed one batch converted to a backend tensor "
            "beforehand, repeated (after one step of it alone)",
            "first_trial": "run_search.py --space scratch --epochs 1 --max-trials 1 from "
            "process start to its first trial's line, with the images already decoded in "
            "--cache-dir",
        },
        "note": NOISE,
        "measurements": measurements,
        "first_trial": first,
        "summary": summarize(measurements, first, args.backends, cases),
    }


if __name__ == "__main__":
    main()
