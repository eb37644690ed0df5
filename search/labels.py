"""`--labels FILE.csv`: classes from a CSV beside a folder of images, as most Kaggle image sets
ship them, instead of class folders.

The CSV has the columns `filename,label` (names relative to `--data`, in any sub-folder) and
may have `split` (`train`, `validation` or `test`), which overrides the seeded split for its
rows; rows without one are split as a flat folder is. Rows naming a missing file, a file that
is not an image, an empty label or an unknown split, and images in the folder that the CSV does
not name, are skipped and listed with the run's other skipped files; the run refuses only when a
class is left with too few images, as with unreadable images.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from pathlib import Path

from search.errors import UsageError

REQUIRED = ("filename", "label")
SPLIT_NAMES = ("train", "validation", "test")


def read_label_rows(labels: Path) -> list[dict[str, str]]:
    """The CSV's rows, its columns checked; a file that cannot be read is refused in one line."""
    try:
        with open(labels, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"--labels {labels}: cannot read it as CSV ({error})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise UsageError(
            f"--labels {labels}: no {' or '.join(missing)} column (it has {columns}); the CSV "
            f"needs filename,label and may have split"
        )
    return rows


def labelled_files(
    root: Path, labels: Path, image_files: list[Path], *, extensions: Collection[str]
) -> tuple[list[str], dict[str, list], list[tuple[Path, int]], list[dict]]:
    """Class names (sorted), the (file, label) pairs whose split the CSV fixes, by split, the
    pairs left to the seeded split, and the skipped rows and files with their reasons.
    `extensions` (lower case, with the dot) are what search/data.py decodes: given, not
    imported, so data.py can import this module and not the other way round."""
    rows = read_label_rows(labels)
    class_names = sorted({r["label"] for r in rows if r["label"]})
    index = {name: i for i, name in enumerate(class_names)}
    mentioned = {(root / r["filename"]).resolve() for r in rows if r["filename"]}
    fixed: dict[str, list] = {name: [] for name in SPLIT_NAMES}
    seeded, skipped, named = [], [], set()
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        path = (root / row["filename"]).resolve()
        split = row.get("split", "")
        reason = None
        if not row["filename"] or not path.is_file():
            reason = f"labels line {number}: no such file"
        elif path.suffix.lower() not in extensions:
            reason = f"labels line {number}: not an image file"
        elif not row["label"]:
            reason = f"labels line {number}: empty label"
        elif split and split not in SPLIT_NAMES:
            reason = f"labels line {number}: unknown split {split!r}"
        elif path in named:
            reason = f"labels line {number}: listed twice"
        if reason:
            skipped.append(
                {"split": split or "-", "path": str(root / row["filename"]), "reason": reason}
            )
            continue
        named.add(path)
        pair = (path, index[row["label"]])
        (fixed[split] if split else seeded).append(pair)
    skipped += [
        {"split": "-", "path": str(p), "reason": f"not in {labels.name}"}
        for p in image_files
        if p.resolve() not in mentioned
    ]
    return class_names, fixed, seeded, skipped
