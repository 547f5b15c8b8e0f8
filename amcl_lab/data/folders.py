"""Image folders (ImageFolder layout) as uint8 splits: ImageNet-100 and any local image set.

The layout is torchvision's ``ImageFolder`` one, with a training and a test folder::

    <root>/train/<class>/<image>     e.g. imagenet100/train/n01440764/n01440764_10026.JPEG
    <root>/val/<class>/<image>       (or <root>/test/...)

Classes are the sub-folder names in sorted order (label 0 is the first name, as in
``ImageFolder``); images are the files with an image extension (:data:`EXTENSIONS`, any
case), in sorted order within each class; hidden files are skipped.  Every image is decoded
with Pillow (a dependency of matplotlib), converted to RGB, resized so that its shorter side
is ``size`` and centre-cropped to ``size x size`` (the evaluation transform of the ImageNet
recipes), and kept as uint8, so the engine's tensor augmentations apply as to CIFAR.
Decoding runs in a thread pool (Pillow releases the GIL while it decodes).

Registered datasets (:data:`amcl_lab.data.DATASETS`):

* ``"imagenet100"``: ``<data_dir>/imagenet100/`` (or ``data_dir`` itself when it is named so)
  with ``train/`` and ``val/``: the ImageNet-100 subset of Tian et al. 2020 (CMC,
  arXiv:1906.05849; 100 classes, about 126,689 / 5,000 images) used by Wang & Liu 2021,
  Table 1.  Stored at 96 x 96 (STL-10's size; 3.5 GB of uint8 for the training set, where
  224 x 224 would take 19 GB), which is a documented choice of this reader;
* ``"image_folder"``: ``data_dir`` itself holds ``train/`` and ``val/`` (or ``test/``), at
  64 x 64: any local image set in that layout.

Nothing is downloaded; a missing folder is an error that names it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .images import ImageData, Split

__all__ = ["EXTENSIONS", "load_image_folder", "load_imagenet100", "read_folder"]

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET100_FOLDER = "imagenet100"
IMAGENET100_SIZE = 96
IMAGE_FOLDER_SIZE = 64
TEST_FOLDERS = ("val", "test")


def _classes(fn: str, folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"{fn}: {folder} has no class sub-folders (<class>/<image> expected)")
    return names


def _files(fn: str, folder: Path) -> list[Path]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS
    )
    if not files:
        raise ValueError(
            f"{fn}: the class folder {folder} holds no images ({', '.join(EXTENSIONS)})"
        )
    return files


def _decode(fn: str, path: Path, size: int) -> np.ndarray:
    """One image as ``(3, size, size)`` uint8: shorter side to ``size``, centre crop."""
    from PIL import Image, UnidentifiedImageError  # matplotlib's dependency; imported lazily

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{fn}: cannot read the image {path}: {error}") from None
    width, height = rgb.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new != (width, height):
        rgb = rgb.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def read_folder(
    folder: str | Path,
    size: int,
    classes: Sequence[str] | None = None,
    *,
    name: str | None = None,
    workers: int | None = None,
) -> ImageData:
    """The images of ``folder/<class>/*`` as :class:`ImageData` of ``size x size`` RGB images.

    ``classes`` fixes the class list (the training folder's, so that a test folder with the
    same classes gets the same labels); by default it is the sorted sub-folder names.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no class folders, an empty class folder, a class of ``classes`` missing
            or one not in it, or an unreadable image (each names the folder or file).
    """
    fn = "read_folder"
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{fn}: image folder {folder} does not exist")
    found = _classes(fn, folder)
    classes = list(found if classes is None else classes)
    if set(found) != set(classes):
        extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise ValueError(
            f"{fn}: the classes of {folder} differ from the training classes: "
            f"{'missing ' + ', '.join(missing[:5]) if missing else ''}"
            f"{'; ' if missing and extra else ''}{'extra ' + ', '.join(extra[:5]) if extra else ''}"
        )
    paths, labels = [], []
    for label, cls in enumerate(classes):
        files = _files(fn, folder / cls)
        paths += files
        labels += [label] * len(files)
    workers = workers or min(32, (os.cpu_count() or 1) + 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda p: _decode(fn, p, size), paths))
    return ImageData(
        name or folder.name,
        torch.from_numpy(np.stack(images)),
        torch.tensor(labels, dtype=torch.int64),
        tuple(classes),
    )


def load_image_folder(
    data_dir: str | Path | None,
    size: int = IMAGE_FOLDER_SIZE,
    *,
    name: str = "image_folder",
    folder: str | None = None,
) -> Split:
    """A :class:`Split` from ``data_dir/[folder/]train`` and ``.../val`` (or ``.../test``).

    ``folder`` names the dataset's own folder under ``data_dir`` (``data_dir`` may also be
    that folder itself); without it ``data_dir`` holds ``train/`` directly.

    Raises:
        FileNotFoundError: no ``data_dir``, or no ``train/`` or test folder (named).
    """
    fn = f"load_{name}"
    if data_dir is None or str(data_dir) == "":
        where = f"{folder}/" if folder else "the folder"
        raise FileNotFoundError(
            f"{fn}: data_dir is required (nothing is downloaded); pass the directory that holds "
            f"{where} with train/<class>/ and val/<class>/ (the CLI's --data-dir)"
        )
    root = Path(data_dir).expanduser()
    if folder is not None and root.name != folder:
        root = root / folder
    train = root / "train"
    test = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    missing = [str(p) for p, ok in ((train, train.is_dir()), (root / "val", test)) if not ok]
    if missing:
        raise FileNotFoundError(
            f"{fn}: missing {', '.join(missing)}; expected {root}/train/<class>/<image> and "
            f"{root}/val/<class>/<image> (or test/)"
        )
    assert test is not None
    train_set = read_folder(train, size, name=f"{name}/train")
    test_set = read_folder(test, size, train_set.classes, name=f"{name}/test")
    return Split(name, train_set, test_set)


def load_imagenet100(data_dir: str | Path | None) -> Split:
    """ImageNet-100 from ``data_dir/imagenet100/{train,val}``, at 96 x 96 (module docstring)."""
    return load_image_folder(
        data_dir, IMAGENET100_SIZE, name="imagenet100", folder=IMAGENET100_FOLDER
    )
