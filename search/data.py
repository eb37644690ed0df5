"""Find the image folder, scan it once, split it, and decode every usable image once per run.

Layouts, as `keras.utils.image_dataset_from_directory` reads them:
  DIR/train/<class>/*, DIR/validation/<class>/* (or DIR/val/), optionally DIR/test/<class>/*;
  or a flat DIR/<class>/*, split by file with a fixed seed.
Without a test folder, a seeded, per-class 1/5 of the validation files is held out as the test
set, as the documents do with `validation.take(n // 5)`, but by file so it never changes.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from search.errors import UsageError, first_line

DEFAULT_DATASET = "cats_and_dogs_filtered"
DATASET_ORIGIN = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VALIDATION_DIRS = ("validation", "val")
SPLITS = ("train", "validation", "test")
TEST_FRACTION = 0.2  # of the validation files, when there is no test folder
VALIDATION_FRACTION = 0.2  # of all files, for a flat layout


@dataclass
class Split:
    """Decoded images of one split: uint8 (n, size, size, 3), int labels, source files."""

    x: np.ndarray
    y: np.ndarray
    files: list[str]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class ImageData:
    root: Path
    class_names: list[str]
    image_size: int
    layout: str
    train: Split
    validation: Split
    test: Split
    skipped: list[dict] = field(default_factory=list)
    fingerprint: str = ""  # of the files, labels, sizes, times and image size decoded

    def split(self, name: str) -> Split:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Usable images per split and class."""
        return {
            name: {c: int((self.split(name).y == i).sum()) for i, c in enumerate(self.class_names)}
            for name in SPLITS
        }


def keras_home() -> Path:
    """The Keras cache folder, found the way Keras finds it, without importing Keras."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"])
    base = Path.home()
    if not os.access(base, os.W_OK):
        base = Path("/tmp")
    return base / ".keras"


def resolve_data_dir(data: str, origin: str = DATASET_ORIGIN) -> Path:
    """A folder as given, or the default data set from the Keras cache (downloaded if absent)."""
    path = Path(data).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(
                f"--data {data} is a file; pass the folder that holds the class folders"
            )
        return path
    if data != DEFAULT_DATASET:
        raise UsageError(
            f"--data {data}: no such folder; pass a folder of class subfolders "
            f"(or train/ and validation/ folders of them)"
        )
    datasets = keras_home() / "datasets"
    for candidate in (
        datasets / DEFAULT_DATASET,
        datasets / f"{DEFAULT_DATASET}_extracted" / DEFAULT_DATASET,
    ):
        if (candidate / "train").is_dir():
            return candidate
    return _download_default(datasets, origin)


def _download_default(datasets: Path, origin: str) -> Path:
    import keras  # only here: resolving a local folder must not pay for importing Keras

    try:
        extracted = keras.utils.get_file(
            f"{DEFAULT_DATASET}.zip", origin=origin, extract=True, cache_dir=str(datasets.parent)
        )
    except Exception as error:
        raise UsageError(
            f"{DEFAULT_DATASET} is not in {datasets} and could not be downloaded "
            f"({first_line(error)}); "
            f"put the extracted folder at {datasets / DEFAULT_DATASET} or pass --data DIR"
        ) from None
    return Path(extracted) / DEFAULT_DATASET


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """Image files under a class folder, recursively, in a stable order; hidden files ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return found


def _validation_dir(root: Path) -> Path | None:
    return next((root / d for d in VALIDATION_DIRS if (root / d).is_dir()), None)


def _class_files(split_dir: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    return [(f, i) for i, c in enumerate(class_names) for f in _image_files(split_dir / c)]


def _check_classes(root: Path, class_names: list[str]) -> None:
    if len(class_names) >= 2:
        return
    inner = root / class_names[0] if class_names else None
    if inner is not None and ((inner / "train").is_dir() or len(_subdirs(inner)) >= 2):
        raise UsageError(
            f"{root} holds one folder, {class_names[0]!r}, that looks like the data "
            f"set: pass --data {inner}"
        )
    raise UsageError(
        f"{root} has {len(class_names)} class folder(s); a classifier needs at "
        f"least 2 folders of images, one per class"
    )


def _seeded_holdout(files: list[tuple[Path, int]], fraction: float, seed: int):
    """Per class, a seeded `fraction` of the files (at least one where a class has two or more)."""
    kept, held = [], []
    for label in sorted({lab for _, lab in files}):
        members = sorted(f for f in files if f[1] == label)
        random.Random(f"{seed}-{label}").shuffle(members)
        n = round(len(members) * fraction) or (1 if len(members) >= 2 else 0)
        held += members[:n]
        kept += members[n:]
    return sorted(kept), sorted(held)


def list_splits(root: Path, split_seed: int) -> tuple[str, list[str], dict[str, list]]:
    """The layout name, class names and (file, label) lists per split."""
    if (root / "train").is_dir():
        validation_dir = _validation_dir(root)
        if validation_dir is None:
            raise UsageError(
                f"{root}/train exists but {root}/validation does not; add it, or "
                f"pass a flat folder of class folders"
            )
        class_names = _subdirs(root / "train")
        _check_classes(root / "train", class_names)
        split_dirs = {"train": root / "train", "validation": validation_dir}
        if (root / "test").is_dir():
            split_dirs["test"] = root / "test"
        for folder in split_dirs.values():
            if _subdirs(folder) != class_names:
                raise UsageError(
                    f"{folder} has classes {_subdirs(folder)} but train has "
                    f"{class_names}; every split needs the same class folders"
                )
        files = {name: _class_files(folder, class_names) for name, folder in split_dirs.items()}
        layout = "train/validation/test" if "test" in files else "train/validation"
        if "test" not in files:
            files["validation"], files["test"] = _seeded_holdout(
                files["validation"], TEST_FRACTION, split_seed
            )
        return layout, class_names, files
    class_names = _subdirs(root)
    _check_classes(root, class_names)
    everything = _class_files(root, class_names)
    train, validation = _seeded_holdout(everything, VALIDATION_FRACTION, split_seed)
    validation, test = _seeded_holdout(validation, TEST_FRACTION, split_seed)
    return "flat", class_names, {"train": train, "validation": validation, "test": test}


def decode_image(path: Path, size: int) -> np.ndarray:
    """Any image Pillow reads, as RGB uint8 (size, size, 3): EXIF rotation applied, grey, CMYK,
    palette and RGBA converted, the first frame of an animation, bilinear resize."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when it is >= size
        image = ImageOps.exif_transpose(image).convert("RGB")
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _try_decode(path: Path, size: int) -> np.ndarray | str:
    try:
        return decode_image(path, size)
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as error:
        return first_line(error)


def _decode_all(paths: list[Path], size: int, workers: int) -> list[np.ndarray | str]:
    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: _try_decode(p, size), paths))


def _cache_key(files: dict[str, list], size: int) -> str:
    digest = hashlib.sha256(f"v1-{size}".encode())
    for name in SPLITS:
        for path, label in files[name]:
            stat = path.stat()
            digest.update(f"{name}|{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode_splits(files: dict[str, list], size: int, workers: int):
    splits, skipped = {}, []
    for name in SPLITS:
        decoded = _decode_all([p for p, _ in files[name]], size, workers)
        good = [
            (img, lab, str(p))
            for img, (p, lab) in zip(decoded, files[name], strict=True)
            if not isinstance(img, str)
        ]
        skipped += [
            {"split": name, "path": str(p), "reason": img}
            for img, (p, _) in zip(decoded, files[name], strict=True)
            if isinstance(img, str)
        ]
        x = np.stack([g[0] for g in good]) if good else np.zeros((0, size, size, 3), np.uint8)
        splits[name] = Split(
            x, np.array([g[1] for g in good], dtype=np.int32), [g[2] for g in good]
        )
    return splits, skipped


def _save_cache(path: Path, splits: dict[str, Split], skipped: list[dict]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    arrays = {f"{n}_{k}": getattr(splits[n], k) for n in SPLITS for k in ("x", "y")}
    meta = {n: splits[n].files for n in SPLITS} | {"skipped": skipped}
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def _load_cache(path: Path):
    import json

    with np.load(path) as cached:
        meta = json.loads(str(cached["meta"]))
        splits = {n: Split(cached[f"{n}_x"], cached[f"{n}_y"], meta[n]) for n in SPLITS}
    return splits, meta["skipped"]


# Fewest usable images of each class per split: two to learn from, one to validate on.
MIN_IMAGES = {"train": 2, "validation": 1}


def _require_images(class_names: Iterable[str], splits: dict[str, Split]) -> None:
    for name, least in MIN_IMAGES.items():
        for i, c in enumerate(class_names):
            n = int((splits[name].y == i).sum())
            if n < least:
                raise UsageError(
                    f"class {c!r} has {n} usable image(s) in the {name} split, fewer than "
                    f"{least}; add images to it or remove the class folder"
                )


def load_image_data(
    root: Path,
    image_size: int,
    split_seed: int = 1337,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> ImageData:
    """Scan, split and decode `root` once. Unreadable files are skipped and listed, not fatal.

    With `cache_dir`, the decoded arrays are kept there, keyed by the files' names, sizes and
    modification times and the image size, so a resumed run does not decode again.
    """
    layout, class_names, files = list_splits(root, split_seed)
    fingerprint = _cache_key(files, image_size)
    cache = cache_dir / f"images-{fingerprint}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        splits, skipped = _load_cache(cache)
    else:
        splits, skipped = _decode_splits(files, image_size, workers or os.cpu_count() or 1)
        if cache is not None:
            _save_cache(cache, splits, skipped)
    _require_images(class_names, splits)
    return ImageData(
        root,
        class_names,
        image_size,
        layout,
        splits["train"],
        splits["validation"],
        splits["test"],
        skipped,
        fingerprint,
    )
