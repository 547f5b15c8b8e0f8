"""Readers for CIFAR-10, CIFAR-100 and STL-10 in their standard distributed formats.

Nothing is downloaded: point ``data_dir`` at the directory holding the extracted archive (or
at the archive's own folder) and the reader checks that every file is there, naming the
missing ones otherwise.  Expected layouts:

* CIFAR-10, "python version" (``cifar-10-python.tar.gz``): ``cifar-10-batches-py/`` with
  ``data_batch_1`` ... ``data_batch_5``, ``test_batch`` and optionally ``batches.meta``;
* CIFAR-100, "python version" (``cifar-100-python.tar.gz``): ``cifar-100-python/`` with
  ``train``, ``test`` and optionally ``meta``;
* STL-10, "binary version" (``stl10_binary.tar.gz``): ``stl10_binary/`` with ``train_X.bin``,
  ``train_y.bin``, ``test_X.bin``, ``test_y.bin``, optionally ``class_names.txt`` and, for
  ``"stl10_unlabeled"``, ``unlabeled_X.bin``.

CIFAR batches are pickled dictionaries (``data``: ``(n, 3072)`` uint8 rows holding the red,
green and blue 32x32 planes in row-major order; ``labels`` or ``fine_labels``: a list of
ints).  They are unpickled with an allow-list that admits only NumPy arrays and plain
containers, so a tampered file cannot run code.  STL-10 stores each image as three 96x96
planes in column-major order and labels 1-10 as bytes.

CIFAR's official train/test split is kept.  For STL-10, ``"stl10"`` trains on the 5,000
labelled training images; ``"stl10_unlabeled"`` adds the 100,000 unlabelled images (label
``-1``) to the training set for self-supervised pretraining; probes use labelled rows only.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .images import ImageData, Split

__all__ = ["load_cifar10", "load_cifar100", "load_stl10", "load_stl10_unlabeled"]

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
STL10_FOLDER = "stl10_binary"
STL10_SIZE = 96

# (module, name) pairs a CIFAR pickle may reference: array reconstruction and the Python 2
# string codec, nothing that can execute code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists"
            )
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]  # NumPy 2 moved numpy.core
        return getattr(importlib.import_module(module), name)


def _unpickle(fn: str, path: Path) -> dict[str, Any]:
    """A CIFAR batch with ``str`` keys (the files were written by Python 2: bytes keys)."""
    try:
        with path.open("rb") as f:
            raw = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(f"{fn}: {path} is not a readable CIFAR batch: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{fn}: {path} must hold a dict, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: val for k, val in raw.items()}


def _folder(fn: str, data_dir: str | Path | None, folder: str, required: list[str]) -> Path:
    """The dataset folder under (or equal to) ``data_dir``, with every required file."""
    if data_dir is None or str(data_dir) == "":
        raise FileNotFoundError(
            f"{fn}: data_dir is required (nothing is downloaded); pass the directory that "
            f"holds {folder}/ (the CLI's --data-dir), containing {', '.join(required)}"
        )
    root = Path(data_dir).expanduser()
    base = root if root.name == folder else root / folder
    missing = [name for name in required if not (base / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{fn}: missing {', '.join(missing)} in {base}; expected the extracted standard "
            f"archive with {folder}/{{{', '.join(required)}}}"
        )
    return base


def _exact_uint8(fn: str, raw: Any, path: Path) -> np.ndarray:
    """``raw`` as uint8 pixels, refusing anything a cast would change (wraparound, rounding)."""
    array = np.asarray(raw)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iu" or (
        array.size and (int(array.min()) < 0 or int(array.max()) > 255)
    ):
        shown = (
            f"values in [{array.min()}, {array.max()}]"
            if array.size and array.dtype.kind in "iuf"
            else ""
        )
        raise ValueError(
            f"{fn}: {path} must hold uint8 pixels (integers 0-255), got dtype {array.dtype} "
            f"{shown}".rstrip()
            + "; a cast would wrap or round them"
        )
    return array.astype(np.uint8)


def _exact_labels(fn: str, raw: Any, path: Path, key: str, classes: int) -> np.ndarray:
    """``raw`` as int64 class indices in ``[0, classes)``, refusing floats and bad values."""
    array = np.asarray(raw)
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(
            f"{fn}: {path} must hold integer {key}, got dtype {array.dtype}; a cast would "
            "truncate them"
        )
    array = array.astype(np.int64)
    if array.size and (int(array.min()) < 0 or int(array.max()) >= classes):
        raise ValueError(
            f"{fn}: {path} must hold {key} in [0, {classes - 1}], got values in "
            f"[{int(array.min())}, {int(array.max())}]"
        )
    return array


def _cifar_images(fn: str, batches: list[dict[str, Any]], path: Path) -> np.ndarray:
    data = np.concatenate([_exact_uint8(fn, b["data"], path) for b in batches])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{fn}: {path} must hold (n, 3072) uint8 rows (three 32x32 planes), got shape "
            f"{data.shape}"
        )
    return data.reshape(-1, 3, 32, 32)


def _names(fn: str, meta: Path, key: str, count: int) -> tuple[str, ...]:
    if meta.is_file():
        names = _unpickle(fn, meta)[key]
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return tuple(str(i) for i in range(count))


def _cifar(
    fn: str,
    name: str,
    data_dir: str | Path | None,
    folder: str,
    train_files: list[str],
    test_file: str,
    label_key: str,
    meta: tuple[str, str],
    classes: int,
) -> Split:
    base = _folder(fn, data_dir, folder, [*train_files, test_file])
    names = _names(fn, base / meta[0], meta[1], classes)
    sets = []
    for split, files in (("train", train_files), ("test", [test_file])):
        batches = [_unpickle(fn, base / f) for f in files]
        images = _cifar_images(fn, batches, base / files[0])
        labels = np.concatenate(
            [
                _exact_labels(fn, b[label_key], base / f, label_key, classes)
                for b, f in zip(batches, files, strict=True)
            ]
        )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"{fn}: {base / files[0]} has {images.shape[0]} images but {labels.shape[0]} "
                f"{label_key}"
            )
        sets.append(
            ImageData(f"{name}/{split}", torch.from_numpy(images), torch.from_numpy(labels), names)
        )
    return Split(name, sets[0], sets[1])


def load_cifar10(data_dir: str | Path | None) -> Split:
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB, 10 classes) from ``data_dir``."""
    return _cifar(
        "load_cifar10",
        "cifar10",
        data_dir,
        CIFAR10_FOLDER,
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "labels",
        ("batches.meta", "label_names"),
        10,
    )


def load_cifar100(data_dir: str | Path | None) -> Split:
    """CIFAR-100 (50,000 train / 10,000 test, 32x32 RGB, 100 fine classes) from ``data_dir``."""
    return _cifar(
        "load_cifar100",
        "cifar100",
        data_dir,
        CIFAR100_FOLDER,
        ["train"],
        "test",
        "fine_labels",
        ("meta", "fine_label_names"),
        100,
    )


def _stl_images(fn: str, path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    per_image = 3 * STL10_SIZE * STL10_SIZE
    if raw.size % per_image:
        raise ValueError(
            f"{fn}: {path} has {raw.size} bytes, not a multiple of {per_image} (3x96x96 images)"
        )
    # each plane is stored column-major: swap to (channel, row, column)
    return raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 1, 3, 2).copy()


def _stl_set(fn: str, base: Path, split: str, names: tuple[str, ...]) -> ImageData:
    images = _stl_images(fn, base / f"{split}_X.bin")
    labels = np.fromfile(base / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    if labels.shape != (images.shape[0],) or (labels.size and labels.min() < 0):
        raise ValueError(
            f"{fn}: {base / f'{split}_y.bin'} must hold one label in 1..{len(names)} per image "
            f"of {split}_X.bin ({images.shape[0]} images), got {labels.size} labels"
        )
    return ImageData(f"stl10/{split}", torch.from_numpy(images), torch.from_numpy(labels), names)


def _stl10(fn: str, data_dir: str | Path | None, unlabeled: bool) -> Split:
    required = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    base = _folder(fn, data_dir, STL10_FOLDER, [*required, *(["unlabeled_X.bin"] * unlabeled)])
    names_file = base / "class_names.txt"
    names = (
        tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
        if names_file.is_file()
        else tuple(str(i) for i in range(10))
    )
    train, test = _stl_set(fn, base, "train", names), _stl_set(fn, base, "test", names)
    if not unlabeled:
        return Split("stl10", train, test)
    extra = torch.from_numpy(_stl_images(fn, base / "unlabeled_X.bin"))
    images = torch.cat([train.images, extra])
    labels = torch.cat([train.labels, torch.full((extra.shape[0],), -1, dtype=torch.int64)])
    return Split("stl10_unlabeled", ImageData("stl10_unlabeled/train", images, labels, names), test)


def load_stl10(data_dir: str | Path | None) -> Split:
    """STL-10 labelled splits (5,000 train / 8,000 test, 96x96 RGB, 10 classes)."""
    return _stl10("load_stl10", data_dir, unlabeled=False)


def load_stl10_unlabeled(data_dir: str | Path | None) -> Split:
    """STL-10 with the 100,000 unlabelled images (label -1) appended to the training set."""
    return _stl10("load_stl10_unlabeled", data_dir, unlabeled=True)
