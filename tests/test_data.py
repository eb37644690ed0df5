"""search.data on real photos: corrupt and odd files, splits, the default data set, folder errors
and the decoded-image cache. Odd and broken files are derived from real JPEGs in tmp_path."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CATS_AND_DOGS, KERAS_HOME, link_images, need
from PIL import Image, ImageOps

from search.data import decode_image, list_splits, load_image_data, resolve_data_dir
from search.errors import UsageError

SIZE = 32


def photo(index: int = 0, split: str = "train", name: str = "cats") -> Path:
    """A real JPEG from the shared data set."""
    return sorted((need(CATS_AND_DOGS) / split / name).iterdir())[index]


def copy_images(target: Path, per_split: dict[str, int], classes=("cats", "dogs")) -> Path:
    """Like link_images, but real copies: safe to touch or rewrite."""
    for split, count in per_split.items():
        for name in classes:
            folder = target / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                shutil.copy(photo(index, "train", name), folder)
    return target


def link(folder: Path, indexes, split: str = "train", name: str = "cats") -> Path:
    """Symlinks in `folder` to the real photos split/name/[indexes]."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in indexes:
        source = photo(index, split, name)
        (folder / source.name).symlink_to(source)
    return folder


def link_flat(target: Path, count: int, classes=("cats", "dogs")) -> Path:
    """A flat DIR/<class>/files layout of `count` real photos per class."""
    for name in classes:
        link(target / name, range(count), "train", name)
    return target


def split_names(files) -> tuple[set[str], set[str], set[str]]:
    return names(files["train"]), names(files["validation"]), names(files["test"])


def names(pairs) -> set[str]:
    return {str(path) for path, _ in pairs}


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# 1. Corrupt files are skipped and listed, not fatal


@pytest.mark.bad_input
def test_corrupt_files_are_skipped_and_listed(tmp_path):
    root = link_images(tmp_path / "data", {"train": 4, "validation": 5})
    data_bytes = photo(10).read_bytes()
    corrupt = {
        root / "train" / "cats" / "zero.jpg": b"",
        root / "train" / "cats" / "truncated.jpg": data_bytes[: len(data_bytes) // 2],
        root / "train" / "dogs" / "notes.jpg": b"these are my notes, not a photo\n",
        root / "validation" / "dogs" / "page.jpg": (
            b"<!DOCTYPE html><html><head><title>404</title></head><body>Not Found</body></html>\n"
        ),
    }
    for path, content in corrupt.items():
        path.write_bytes(content)

    _, class_names, files = list_splits(root, 1337)
    split_of = {str(p): split for split, pairs in files.items() for p, _ in pairs}
    data = load_image_data(root, SIZE)

    skipped = {entry["path"]: entry for entry in data.skipped}
    assert set(skipped) == {str(p) for p in corrupt}
    for path in corrupt:
        entry = skipped[str(path)]
        assert entry["split"] == split_of[str(path)]
        assert entry["reason"].strip()
    assert skipped[str(root / "train" / "cats" / "zero.jpg")]["split"] == "train"
    assert skipped[str(root / "validation" / "dogs" / "page.jpg")]["split"] in (
        "validation",
        "test",
    )

    # Usable images: every listed file but the corrupt ones.
    expected = {
        split: {
            c: sum(1 for p, lab in pairs if lab == i and p not in corrupt)
            for i, c in enumerate(class_names)
        }
        for split, pairs in files.items()
    }
    assert data.counts() == expected
    assert data.counts()["train"] == {"cats": 4, "dogs": 4}
    for c in class_names:
        assert data.counts()["validation"][c] + data.counts()["test"][c] == 5
    assert data.train.x.shape == (8, SIZE, SIZE, 3)
    assert data.train.x.dtype == np.uint8
    assert not set(data.train.files) & {str(p) for p in corrupt}


# 2. Valid odd files are converted


def odd_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(photo(3)) as original:
        rgb = original.convert("RGB")
    made = {
        "plain.png": lambda p: rgb.save(p, "PNG"),
        "png_named.jpg": lambda p: rgb.save(p, "PNG"),
        "grey.jpg": lambda p: rgb.convert("L").save(p, "JPEG"),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "alpha.png": lambda p: rgb.convert("RGBA").save(p, "PNG"),
        "bitmap.bmp": lambda p: rgb.save(p, "BMP"),
        "palette.gif": lambda p: rgb.save(p, "GIF"),
    }
    paths = []
    for name, save in made.items():
        save(folder / name)
        paths.append(folder / name)
    with Image.open(folder / "png_named.jpg") as check:
        assert check.format == "PNG"
    with Image.open(folder / "cmyk.jpg") as check:
        assert check.mode == "CMYK"
    with Image.open(folder / "alpha.png") as check:
        assert check.mode == "RGBA"
    with Image.open(folder / "palette.gif") as check:
        assert check.mode == "P"
    return paths


@pytest.mark.bad_input
def test_odd_valid_files_decode_to_rgb(tmp_path):
    paths = odd_files(tmp_path / "odd")
    reference = decode_image(tmp_path / "odd" / "plain.png", SIZE).astype(int)
    for path in paths:
        image = decode_image(path, SIZE)
        assert image.shape == (SIZE, SIZE, 3), path.name
        assert image.dtype == np.uint8, path.name
        if path.name == "grey.jpg":
            assert np.array_equal(image[..., 0], image[..., 1])
            assert np.array_equal(image[..., 1], image[..., 2])
            grey_reference = reference.mean(axis=2)
            assert np.abs(image[..., 0] - grey_reference).mean() < 12
        else:
            # The same photo: close to the lossless decode (JPEG/GIF lose a little).
            assert np.abs(image.astype(int) - reference).mean() < 12, path.name


@pytest.mark.bad_input
def test_odd_valid_files_are_not_skipped(tmp_path):
    root = tmp_path / "data"
    odd = odd_files(root / "train" / "cats")
    link_images(root, {"validation": 2})
    link(root / "train" / "dogs", range(3), "train", "dogs")
    data = load_image_data(root, SIZE)
    assert data.skipped == []
    assert data.counts()["train"] == {"cats": len(odd), "dogs": 3}
    assert {str(p) for p in odd} <= set(data.train.files)
    assert data.train.x.shape == (len(odd) + 3, SIZE, SIZE, 3)


@pytest.mark.bad_input
def test_exif_orientation_is_applied(tmp_path):
    with Image.open(photo(5)) as original:
        wide = original.convert("RGB").crop((0, 0, 60, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    tagged = tmp_path / "tagged.jpg"
    wide.save(tagged, "JPEG", exif=exif, quality=95)
    with Image.open(tagged) as saved:
        assert saved.getexif().get(0x0112) == 6
        assert saved.size == (60, 30)
        upright = ImageOps.exif_transpose(saved)
        assert upright.size == (30, 60)
        upright.save(tmp_path / "upright.png")
        saved.convert("RGB").save(tmp_path / "unrotated.png")

    decoded = decode_image(tagged, SIZE).astype(int)
    expected = decode_image(tmp_path / "upright.png", SIZE).astype(int)
    ignored = decode_image(tmp_path / "unrotated.png", SIZE).astype(int)
    assert np.abs(decoded - expected).mean() < 2
    assert np.abs(decoded - expected).max() < 16
    # The check can tell: ignoring the tag gives a clearly different image.
    assert np.abs(decoded - ignored).mean() > 4 * max(np.abs(decoded - expected).mean(), 1)


# 3. Splits


def test_test_split_is_a_seeded_fifth_of_validation(tiny_folder):
    layout, class_names, files = list_splits(tiny_folder, 1337)
    assert layout == "train/validation"
    assert class_names == ["cats", "dogs"]
    again = list_splits(tiny_folder, 1337)
    assert again == (layout, class_names, files)

    # 20 validation photos per class: 4 per class become test.
    for i in range(2):
        assert sum(1 for _, lab in files["test"] if lab == i) == 4
        assert sum(1 for _, lab in files["validation"] if lab == i) == 16
        assert sum(1 for _, lab in files["train"] if lab == i) == 24

    train, validation, test = split_names(files)
    assert not train & validation
    assert not train & test
    assert not validation & test
    in_validation_folder = {
        str(p) for c in class_names for p in (tiny_folder / "validation" / c).iterdir()
    }
    assert validation | test == in_validation_folder
    assert train == {str(p) for c in class_names for p in (tiny_folder / "train" / c).iterdir()}
    for path, label in files["test"]:
        assert path.parent.name == class_names[label]

    _, _, other = list_splits(tiny_folder, 7)
    assert names(other["test"]) != test
    assert names(other["validation"]) | names(other["test"]) == in_validation_folder
    assert names(other["train"]) == train


def test_test_folder_is_used_as_is(tmp_path):
    root = link_images(tmp_path / "data", {"train": 4, "validation": 5})
    for name in ("cats", "dogs"):
        link(root / "test" / name, range(100, 103), "validation", name)
    layout, class_names, files = list_splits(root, 1337)
    assert layout == "train/validation/test"
    for split in ("train", "validation", "test"):
        on_disk = {str(p) for c in class_names for p in (root / split / c).iterdir()}
        assert names(files[split]) == on_disk, split
    data = load_image_data(root, SIZE)
    assert data.layout == "train/validation/test"
    assert data.counts() == {
        "train": {"cats": 4, "dogs": 4},
        "validation": {"cats": 5, "dogs": 5},
        "test": {"cats": 3, "dogs": 3},
    }


def test_flat_layout_is_split_by_file(tmp_path):
    root = link_flat(tmp_path / "flat", 20)
    layout, class_names, files = list_splits(root, 1337)
    assert layout == "flat"
    assert class_names == ["cats", "dogs"]
    assert list_splits(root, 1337) == (layout, class_names, files)
    train, validation, test = split_names(files)
    assert not train & validation and not train & test and not validation & test
    every = {str(p) for c in class_names for p in (root / c).iterdir()}
    assert train | validation | test == every
    assert len(every) == 40
    for split, pairs in files.items():
        assert {lab for _, lab in pairs} == {0, 1}, split
        for path, label in pairs:
            assert path.parent.name == class_names[label]


# 4. The default data set, found through the Keras cache


def test_default_data_set_is_found_in_the_keras_cache():
    need(CATS_AND_DOGS)
    root = resolve_data_dir("cats_and_dogs_filtered")
    assert root == KERAS_HOME / "datasets" / "cats_and_dogs_filtered"
    assert root.is_relative_to(KERAS_HOME)
    assert len(list((root / "train" / "cats").iterdir())) == 1000


@pytest.mark.bad_input
def test_default_data_set_offline_without_a_copy(tmp_path, monkeypatch):
    # Keras reads KERAS_HOME when first imported: import it now, as every other test sees it.
    import keras  # noqa: F401

    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    message = one_line_error(
        resolve_data_dir,
        "cats_and_dogs_filtered",
        origin="http://127.0.0.1:9/cats_and_dogs_filtered.zip",
    )
    assert "--data" in message
    assert str(home / "datasets") in message


# 5. Folder errors


@pytest.mark.bad_input
def test_missing_folder(tmp_path):
    message = one_line_error(resolve_data_dir, str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in message
    assert "no such folder" in message


@pytest.mark.bad_input
def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "photo.jpg"
    shutil.copy(photo(0), path)
    message = one_line_error(resolve_data_dir, str(path))
    assert str(path) in message
    assert "is a file" in message


@pytest.mark.bad_input
def test_only_one_class_folder(tmp_path):
    flat = link_flat(tmp_path / "flat", 3, classes=("cats",))
    message = one_line_error(load_image_data, flat, SIZE)
    assert "1 class folder" in message and "at least 2" in message
    split = link_images(tmp_path / "split", {"train": 3, "validation": 3}, classes=("cats",))
    message = one_line_error(load_image_data, split, SIZE)
    assert "1 class folder" in message and "at least 2" in message


@pytest.mark.bad_input
def test_splits_with_different_classes(tmp_path):
    root = link_images(tmp_path / "data", {"train": 2})
    link(root / "validation" / "cats", range(2), "validation", "cats")
    link(root / "validation" / "birds", range(2), "validation", "dogs")
    message = one_line_error(load_image_data, root, SIZE)
    assert "birds" in message and "dogs" in message
    assert str(root / "validation") in message


@pytest.mark.bad_input
def test_train_without_validation(tmp_path):
    root = link_images(tmp_path / "data", {"train": 2})
    message = one_line_error(load_image_data, root, SIZE)
    assert "validation" in message and "train" in message


@pytest.mark.bad_input
def test_data_set_nested_one_level_too_deep(tmp_path):
    inner = link_images(tmp_path / "outer" / "real_dataset", {"train": 2, "validation": 2})
    message = one_line_error(load_image_data, tmp_path / "outer", SIZE)
    assert f"--data {inner}" in message


@pytest.mark.bad_input
def test_class_without_a_usable_image(tmp_path):
    root = link_images(tmp_path / "data", {"train": 3, "validation": 3})
    for old in (root / "train" / "dogs").iterdir():
        old.unlink()
    (root / "train" / "dogs" / "broken.jpg").write_bytes(photo(0).read_bytes()[:500])
    message = one_line_error(load_image_data, root, SIZE)
    assert "'dogs' has 0 usable image(s) in the train split" in message


def test_bad_input_class_with_one_usable_training_image(tmp_path):
    """After skipping, each class needs 2 training images: the message names the class."""
    root = link_images(tmp_path / "data", {"train": 3, "validation": 3})
    for old in sorted((root / "train" / "cats").iterdir())[1:]:
        old.unlink()
    (root / "train" / "cats" / "empty.jpg").write_bytes(b"")
    message = one_line_error(load_image_data, root, SIZE)
    assert "'cats' has 1 usable image(s) in the train split, fewer than 2" in message


# 6. The decoded-image cache


def test_decoded_images_are_cached(tmp_path):
    root = copy_images(tmp_path / "data", {"train": 3, "validation": 3})
    (root / "train" / "cats" / "empty.jpg").write_bytes(b"")
    cache = tmp_path / "cache"
    first = load_image_data(root, SIZE, cache_dir=cache)
    written = list(cache.glob("images-*"))
    assert len(written) == 1
    assert len(first.skipped) == 1

    # Same name, size and time, other bytes: the cached decode is what comes back.
    victim = sorted((root / "train" / "dogs").iterdir())[0]
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = load_image_data(root, SIZE, cache_dir=cache)
    assert list(cache.glob("images-*")) == written
    for split in ("train", "validation", "test"):
        a, b = first.split(split), second.split(split)
        assert np.array_equal(a.x, b.x), split
        assert np.array_equal(a.y, b.y), split
        assert a.files == b.files, split
    assert second.skipped == first.skipped
    shutil.copy(photo(0, "train", "dogs"), victim)  # the real photo back, new mtime

    third = load_image_data(root, SIZE, cache_dir=cache)
    assert len(list(cache.glob("images-*"))) == 2
    assert np.array_equal(third.train.x, first.train.x)

    shutil.copy(photo(9, "train", "cats"), root / "train" / "cats" / "added.jpg")
    fourth = load_image_data(root, SIZE, cache_dir=cache)
    assert len(list(cache.glob("images-*"))) == 3
    assert len(fourth.train) == len(first.train) + 1
    assert not list(cache.glob("*.tmp*"))


@pytest.mark.bad_input
def test_bad_input_extreme_sizes_webp_and_odd_names_are_used(tmp_path):
    """WebP, a 1x1 and a 6000x6000 image, and names with spaces, unicode and markup: all used."""
    root = link_images(tmp_path / "data", {"train": 2, "validation": 2})
    odd_class = root / "train" / "chats <b> &amp; été"
    (root / "validation" / odd_class.name).mkdir(parents=True)
    with Image.open(photo(0)) as source:
        rgb = source.convert("RGB")
        odd_class.mkdir()
        rgb.save(odd_class / "a photo ü.webp")
        rgb.resize((1, 1)).save(odd_class / "tiny 1x1.png")
        rgb.resize((6000, 6000)).save(odd_class / "huge.jpg", quality=60)
        rgb.save(root / "validation" / odd_class.name / "<script>.jpg")
    data = load_image_data(root, SIZE)
    assert data.skipped == []
    assert data.class_names == ["cats", "chats <b> &amp; été", "dogs"]
    assert data.counts()["train"]["chats <b> &amp; été"] == 3
    label = data.class_names.index("chats <b> &amp; été")
    assert data.train.x[data.train.y == label].shape == (3, SIZE, SIZE, 3)
