"""Find the image folder, scan it once, split it, and decode every usable image once per run.

Layouts, as `keras.utils.image_dataset_from_directory` reads them:
  DIR/train/<class>/*, DIR/validation/<class>/* (or DIR/val/), optionally DIR/test/<class>/*;
  or a flat DIR/<class>/*, split by file with a fixed seed.
Without a test folder, a seeded, per-class 1/5 of the validation files is held out as the test
set, as the documents do with `validation.take(n // 5)`, but by file so it never changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from search.atomic import atomic_folder
from search.errors import UsageError, WriteFault, first_line
from search.labels import labelled_files

DEFAULT_DATASET = "cats_and_dogs_filtered"
DATASET_ORIGIN = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VALIDATION_DIRS = ("validation", "val")
SPLITS = ("train", "validation", "test")
TEST_FRACTION = 0.2  # of the validation files, when there is no test folder
VALIDATION_FRACTION = 0.2  # of all files, for a flat layout
DECODE_CHUNK = 512  # images decoded at a time


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


class ImagesBySize:
    """The run's images decoded at each size a trial asks for (--image-sizes), each once:
    the same files and splits, so every trial's figures compare."""

    def __init__(self, first: ImageData, decode: Callable[[int], ImageData]):
        self._decoded = {first.image_size: first}
        self._decode = decode

    def __contains__(self, size: int) -> bool:
        """Whether the images are decoded at `size` already."""
        return size in self._decoded

    def __call__(self, size: int) -> ImageData:
        if size not in self._decoded:
            self._decoded[size] = self._decode(size)
        return self._decoded[size]


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


def list_labelled(
    root: Path, labels: Path, split_seed: int
) -> tuple[str, list[str], dict[str, list], list[dict]]:
    """`list_splits` for --labels: classes from the CSV (search/labels.py), each row in its
    `split` or, without one, in the seeded split of a flat folder; also the skipped rows."""
    class_names, fixed, seeded, skipped = labelled_files(
        root, labels, _image_files(root), extensions=IMAGE_EXTENSIONS
    )
    if len(class_names) < 2:
        raise UsageError(
            f"--labels {labels}: {len(class_names)} distinct label(s); a classifier needs at "
            f"least 2 classes"
        )
    train, validation = _seeded_holdout(seeded, VALIDATION_FRACTION, split_seed)
    validation, test = _seeded_holdout(validation, TEST_FRACTION, split_seed)
    if not fixed["test"] and fixed["validation"]:  # as a train/validation layout
        fixed["validation"], fixed["test"] = _seeded_holdout(
            fixed["validation"], TEST_FRACTION, split_seed
        )
    files = {
        "train": sorted(fixed["train"] + train),
        "validation": sorted(fixed["validation"] + validation),
        "test": sorted(fixed["test"] + test),
    }
    return "labels", class_names, files, skipped


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


def _decode_into(x: np.ndarray, paths: list[Path], size: int, *, workers: int) -> list:
    """Decode `paths` into the rows of `x` in order, a chunk at a time (so a memory-mapped `x`
    never needs the whole split in memory); returns each path's row index or error text."""
    outcomes, row = [], 0
    for start in range(0, len(paths), DECODE_CHUNK):
        for image in _decode_all(paths[start : start + DECODE_CHUNK], size, workers):
            if isinstance(image, str):
                outcomes.append(image)
            else:
                x[row] = image
                outcomes.append(row)
                row += 1
    return outcomes


def _reserve(path: Path) -> None:
    """Give the sparse file behind a memory map its blocks now: a full disk is then an ENOSPC
    error here, where writing into the map would have killed the process with SIGBUS."""
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(path)) from None


def _require_space(cache_dir: Path, files: dict[str, list], size: int) -> None:
    """Refuse before decoding when the cache's folder lacks room for the decoded images."""
    need = sum(len(files[name]) for name in SPLITS) * size * size * 3
    existing = next(p for p in (cache_dir, *cache_dir.parents) if p.exists())
    stat = os.statvfs(existing)
    free = stat.f_bavail * stat.f_frsize
    if free < need:
        raise WriteFault(
            f"{existing} has {free / 1e6:.1f} MB free, and the images decoded at {size} px "
            f"need {need / 1e6:.1f} MB: free space there or pass --cache-dir on a larger disk"
        )


def _decode_splits(files: dict[str, list], size: int, workers: int, *, folder: Path | None):
    """Decode every split, into memory or, with `folder`, into .npy files there (memory-mapped).
    Returns the splits, the skipped files, and each split's number of usable images."""
    splits, skipped, counts = {}, [], {}
    for name in SPLITS:
        paths = [p for p, _ in files[name]]
        shape = (len(paths), size, size, 3)
        if folder is None:
            x = np.empty(shape, np.uint8)
        else:
            x = np.lib.format.open_memmap(folder / f"{name}_x.npy", "w+", np.uint8, shape)
            _reserve(folder / f"{name}_x.npy")
        outcomes = _decode_into(x, paths, size, workers=workers)
        good = [f for f, o in zip(files[name], outcomes, strict=True) if not isinstance(o, str)]
        skipped += [
            {"split": name, "path": str(p), "reason": o}
            for (p, _), o in zip(files[name], outcomes, strict=True)
            if isinstance(o, str)
        ]
        counts[name] = len(good)
        y = np.array([lab for _, lab in good], dtype=np.int32)
        if folder is not None:
            x.flush()
            np.save(folder / f"{name}_y.npy", y)
        splits[name] = Split(x[: len(good)], y, [str(p) for p, _ in good])
    return splits, skipped, counts


def _write_meta(folder: Path, splits: dict[str, Split], skipped: list[dict], *, counts) -> None:
    meta = {n: splits[n].files for n in SPLITS} | {"skipped": skipped, "counts": counts}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _load_cache(folder: Path):
    """The decoded splits, memory-mapped from `folder`; None when it is absent or damaged."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        splits = {}
        for n in SPLITS:
            x = np.load(folder / f"{n}_x.npy", mmap_mode="r")[: meta["counts"][n]]
            y = np.load(folder / f"{n}_y.npy")
            splits[n] = Split(x, y, meta[n])
    except (OSError, ValueError, KeyError):
        return None
    return splits, meta["skipped"]


def _decode_cached(files: dict[str, list], size: int, workers: int, *, folder: Path):
    """Decode into a temporary folder beside `folder` and rename it into place, so a crash
    never leaves a half-written cache that looks complete."""

    def write(tmp: Path) -> None:
        # The memory maps point into tmp and die with this call: reopened at their final place.
        splits, skipped, counts = _decode_splits(files, size, workers, folder=tmp)
        _write_meta(tmp, splits, skipped, counts=counts)

    atomic_folder(folder, write)  # another process may finish the same cache first
    return _load_cache(folder)


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
    *,
    split_seed: int = 1337,
    cache_dir: Path | None = None,
    workers: int | None = None,
    labels: Path | None = None,
) -> ImageData:
    """Scan, split and decode `root` once. Unreadable files are skipped and listed, not fatal.

    With `cache_dir`, the decoded arrays are kept there as .npy files, keyed by the files'
    names, sizes and modification times and the image size, and memory-mapped: a resumed run
    does not decode again, and a data set larger than memory is read from disk as needed.
    """
    if labels is None:
        layout, class_names, files = list_splits(root, split_seed)
        unlabelled = []
    else:
        layout, class_names, files, unlabelled = list_labelled(root, Path(labels), split_seed)
    fingerprint = _cache_key(files, image_size)
    workers = workers or os.cpu_count() or 1
    if cache_dir is None:
        splits, skipped, _ = _decode_splits(files, image_size, workers, folder=None)
    else:
        folder = cache_dir / f"images-{fingerprint}"
        cached = _load_cache(folder)
        if cached is None:
            shutil.rmtree(folder, ignore_errors=True)  # damaged: decode again
            _require_space(cache_dir, files, image_size)
            cached = _decode_cached(files, image_size, workers, folder=folder)
        splits, skipped = cached
    _require_images(class_names, splits)
    return ImageData(
        root,
        class_names,
        image_size,
        layout,
        splits["train"],
        splits["validation"],
        splits["test"],
        unlabelled + skipped,
        fingerprint,
    )
