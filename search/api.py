"""The Python API, for notebooks and scripts: `search.run(...)` and what it returns.

    import search
    result = search.run(space=build_model, data="photos/", backend="optuna", max_trials=20)
    result.trials, result.epochs, result.best_model(), result.report_path
    result.export("tflite", output="model.tflite"); result.predict(["cat.jpg"])

Keyword arguments are the command line's long options with underscores, checked by the same
parser, with the same defaults (but no restart for memory growth: a Python call cannot be
started again). Like the command line, this is an entry point: it hands the report and the
model card to the search as hooks.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from search.cli import REPEATED_OPTIONS, RaisingParser, parse_search
from search.config import SearchConfig
from search.store import RunStore

if TYPE_CHECKING:
    import keras
    import numpy as np
    import pandas as pd

ARRAY_FOLDER = "images"  # where (images, labels) arrays are written, inside the run directory


@dataclass(frozen=True)
class SearchResult:
    """A finished (or stopped) run, read from its directory."""

    store: RunStore

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir

    @property
    def report_path(self) -> Path:
        return self.store.run_dir / "report.html"

    @property
    def trials(self) -> pd.DataFrame:
        """One row per trial (trials.csv)."""
        return self.store.trials()

    @property
    def epochs(self) -> pd.DataFrame:
        """One row per trained epoch (epochs.csv)."""
        return self.store.epochs()

    def best_model(self) -> keras.Model:
        import keras

        return keras.saving.load_model(self.store.best_model_path, safe_mode=True)

    def export(
        self,
        fmt: str = "keras",
        output: str | Path | None = None,
        *,
        trial: int | None = None,
        quantize: str | None = None,
    ) -> Path:
        """The best model (or kept trial `trial`'s) for inference in `fmt` (keras, savedmodel,
        onnx or tflite, quantized with `quantize`: dynamic, float16 or int8), with its model card
        and labels.json beside it, as `run_search.py export` writes them."""
        from reports.model_card import write_model_card
        from search.export import export_best

        return export_best(
            self.run_dir,
            fmt,
            output,
            document=write_model_card,
            trial=trial,
            quantize=quantize,
        )

    def predict(self, images: Sequence[str | Path]) -> list[dict]:
        """Each image's class probabilities from the best model, decoded as in training."""
        from search.predict import predict_target

        return predict_target(self.run_dir, images)


def run(
    space: object = "transfer", data: object = "cats_and_dogs_filtered", **options
) -> SearchResult:
    """Search `space` on `data` and return the run.

    `space` is a built-in space's name, a `FILE.py:FUNCTION` spec, or the builder itself: a
    `build(hp, ctx)`, a Keras Tuner `build_model(hp)` or a `keras_tuner.HyperModel`. `data` is
    an image folder, or `(images, labels)` NumPy arrays (uint8 pixels, N x H x W x 3, and
    integer labels, `class_names[label]` naming each) with `class_names=[...]` among the
    options; they are written into the run as class folders, so the run's classes are in
    sorted order, as for any folder (run.json's class_names). Ctrl-C leaves a run that the
    same call with `resume=True` and its `name` continues. `keras_backend` ("tensorflow",
    "torch" or "jax") chooses the Keras backend, before Keras is first imported in the process.
    """
    from reports.html import write_report
    from search.console import quiet
    from search.steps import run_search

    class_names = options.pop("class_names", None)
    config = _config(space, options)
    if not isinstance(data, str | Path):
        data = _write_arrays(data, class_names, Path(config.runs_dir) / config.name / ARRAY_FOLDER)
    config = replace(config, data=str(data))
    try:
        with quiet(config.quiet):
            return SearchResult(run_search(config, report=write_report))
    except KeyboardInterrupt:
        print(
            f"interrupted; finished trials are kept. Resume with search.run(..., "
            f"name={config.name!r}, resume=True)",
            file=sys.stderr,
        )
        raise


def _config(space: object, options: dict) -> SearchConfig:
    """The options checked by the command line's own parser, so both take the same values."""
    from spaces.user import python_space

    known = {f.name for f in fields(SearchConfig)} - {"space", "data", "worker", "worker_index"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"search.run() got unknown options {unknown}; it takes {sorted(known)}")
    name = space if isinstance(space, str) else python_space(space)
    argv = ["--space", name, "--data", "."]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, dict):  # weights={"mobilenet_v3_small": PATH}: NAME=VALUE
            argv += [part for item in value.items() for part in (flag, "=".join(map(str, item)))]
        elif isinstance(value, list | tuple) and key in REPEATED_OPTIONS:
            argv += [part for item in value for part in (flag, str(item))]
        elif isinstance(value, list | tuple):  # objectives, image_sizes, backbones: A,B,...
            argv += [flag, ",".join(map(str, value))]
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    config = parse_search(argv, parser_class=RaisingParser)
    if name.startswith("python:") and config.workers > 1:
        from search.errors import UsageError

        raise UsageError(
            f"workers={config.workers}: a space defined in this process ({name}) cannot be "
            f"loaded by worker processes; put it in a file and pass space='FILE.py:FUNCTION'"
        )
    growth = options.get("max_memory_growth", SearchConfig.max_memory_growth)
    return replace(config, max_memory_growth=growth)


def _write_arrays(data: object, class_names: Sequence[str] | None, folder: Path) -> Path:
    """`(images, labels)` as a folder of PNG files per class, written once into the run
    directory, so the run resumes, caches and shows its images like any folder."""
    import numpy as np
    from PIL import Image

    from search.errors import UsageError

    images, labels = data
    images, labels = np.asarray(images), np.asarray(labels).astype(int).ravel()
    if not class_names or images.ndim not in (3, 4) or len(images) != len(labels):
        raise UsageError(
            "data=(images, labels) needs N x H x W (x 3) uint8 images, N integer labels and "
            "class_names=[...]"
        )
    if folder.exists():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    for index, (image, label) in enumerate(zip(_as_uint8(images), labels, strict=True)):
        target = staging / str(class_names[label])
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:06d}.png")
    staging.rename(folder)
    return folder


def _as_uint8(images: np.ndarray) -> np.ndarray:
    import numpy as np

    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    return images
