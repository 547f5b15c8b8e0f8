"""Tiny data sets written in the standard distributed formats, for the reader and preset tests.

The files are built from the published format descriptions (not with the readers' code): a
CIFAR batch is a pickled dict whose ``data`` rows hold the 1024 red, then green, then blue
values of a 32x32 image in row-major order; an STL-10 image is 3 x 96 x 96 bytes, each
channel stored column by column, labels are bytes 1..10; an image folder is torchvision's
``ImageFolder`` layout (``train/<class>/<image>``, ``val/<class>/<image>``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_BATCHES = 5
RED, BLUE, GREEN = (200, 10, 10), (10, 10, 200), (10, 180, 10)


def planes(seed: int, n: int, size: int) -> np.ndarray:
    """``(n, 3, size, size)`` uint8 images with distinct values per channel and position."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """Rows of red plane, green plane, blue plane, each row-major (the CIFAR layout)."""
    rows = [
        np.concatenate([img[0].ravel(order="C"), img[1].ravel(order="C"), img[2].ravel(order="C")])
        for img in images
    ]
    return np.stack(rows).astype(np.uint8)


def pickle_batch(path: Path, obj: dict) -> None:
    """Pickle ``obj`` with bytes keys: what Python 3 sees when unpickling the original
    Python 2 files."""
    with path.open("wb") as f:
        pickle.dump({k.encode(): val for k, val in obj.items()}, f, protocol=2)


def make_cifar10(
    root: Path, per_batch: int = 2, test_labels: tuple[int, ...] = (3, 1, 4)
) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """``root/cifar-10-batches-py``: five training batches of ``per_batch`` images (labels
    ``i % 10``), a test batch labelled ``test_labels`` and the class names.

    Returns the training images and labels and the test images and labels written.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    count = CIFAR10_BATCHES * per_batch
    train, train_y = planes(0, count, 32), [i % 10 for i in range(count)]
    for b in range(CIFAR10_BATCHES):
        part = slice(per_batch * b, per_batch * (b + 1))
        pickle_batch(
            folder / f"data_batch_{b + 1}",
            {"data": cifar_rows(train[part]), "labels": train_y[part]},
        )
    test, test_y = planes(1, len(test_labels), 32), list(test_labels)
    pickle_batch(folder / "test_batch", {"data": cifar_rows(test), "labels": test_y})
    pickle_batch(folder / "batches.meta", {"label_names": [n.encode() for n in CIFAR10_CLASSES]})
    return train, train_y, test, test_y


def stl_bytes(images: np.ndarray) -> bytes:
    """Each channel column by column: the byte of (channel c, row y, column x) sits at offset
    ``c * 96 * 96 + x * 96 + y``."""
    return b"".join(img[c].T.tobytes() for img in images for c in range(3))


def make_stl10(
    root: Path,
    unlabeled: bool = False,
    train_labels: tuple[int, ...] = (1, 10, 4),
    test_labels: tuple[int, ...] = (2, 3),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``root/stl10_binary`` with the given one-based labels (and two unlabelled images).

    Returns the training, test and unlabelled images written.
    """
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    train, test = planes(4, len(train_labels), 96), planes(5, len(test_labels), 96)
    extra = planes(6, 2, 96)
    (folder / "train_X.bin").write_bytes(stl_bytes(train))
    (folder / "train_y.bin").write_bytes(bytes(train_labels))
    (folder / "test_X.bin").write_bytes(stl_bytes(test))
    (folder / "test_y.bin").write_bytes(bytes(test_labels))
    if unlabeled:
        (folder / "unlabeled_X.bin").write_bytes(stl_bytes(extra))
    names = "airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n"
    (folder / "class_names.txt").write_text(names)
    return train, test, extra


def solid(path: Path, colour, size=(12, 9), fmt="PNG") -> None:
    """One image of a single ``colour``, ``size`` = (width, height), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)


def make_image_folder(root: Path, test="val") -> None:
    """Classes 'b_cat' (red PNGs) and 'a_dog' (blue JPEGs, plus one grey-scale PNG): three
    training images and one test image each, plus a hidden file and a text file."""
    for split, count in (("train", 3), (test, 1)):
        for i in range(count):
            solid(root / split / "b_cat" / f"{i}.png", RED, size=(12 + i, 9))
            solid(root / split / "a_dog" / f"{i}.jpg", BLUE, size=(9, 20), fmt="JPEG")
    Image.new("L", (8, 8), 77).save(root / "train" / "a_dog" / "z_grey.PNG")
    (root / "train" / "a_dog" / ".hidden.png").write_bytes(b"not an image")
    (root / "train" / "a_dog" / "notes.txt").write_text("skipped")
