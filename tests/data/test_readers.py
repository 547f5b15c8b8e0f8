"""CIFAR-10/100 and STL-10 readers on tiny files written in the standard distributed formats.

The files are built here from the published format descriptions (not with the readers'
code): a CIFAR batch is a pickled dict whose ``data`` rows hold the 1024 red, then green,
then blue values of a 32x32 image in row-major order; an STL-10 image is 3 x 96 x 96 bytes,
each channel stored column by column, labels are bytes 1..10.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from amcl_lab.data import load_dataset
from amcl_lab.data.readers import load_cifar10, load_cifar100, load_stl10, load_stl10_unlabeled


def _planes(seed: int, n: int, size: int) -> np.ndarray:
    """``(n, 3, size, size)`` uint8 images with distinct values per channel and position."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """Rows of red plane, green plane, blue plane, each row-major (the CIFAR layout)."""
    rows = [
        np.concatenate([img[0].ravel(order="C"), img[1].ravel(order="C"), img[2].ravel(order="C")])
        for img in images
    ]
    return np.stack(rows).astype(np.uint8)


def _pickle(path: Path, obj: dict) -> None:
    # bytes keys: what Python 3 sees when unpickling the original Python 2 files
    with path.open("wb") as f:
        pickle.dump({k.encode(): val for k, val in obj.items()}, f, protocol=2)


def _make_cifar10(root: Path) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train, train_y = _planes(0, 10, 32), [i % 10 for i in range(10)]
    for b in range(5):
        part = slice(2 * b, 2 * b + 2)
        _pickle(
            folder / f"data_batch_{b + 1}",
            {"data": _cifar_rows(train[part]), "labels": train_y[part]},
        )
    test, test_y = _planes(1, 3, 32), [3, 1, 4]
    _pickle(folder / "test_batch", {"data": _cifar_rows(test), "labels": test_y})
    names = [
        n.encode()
        for n in (
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
    ]
    _pickle(folder / "batches.meta", {"label_names": names})
    return train, train_y, test, test_y


def test_cifar10_reads_planes_labels_and_class_names(tmp_path):
    train, train_y, test, test_y = _make_cifar10(tmp_path)
    split = load_cifar10(tmp_path)
    assert split.train.images.shape == (10, 3, 32, 32)
    assert np.array_equal(split.train.images.numpy(), train)
    assert split.train.labels.tolist() == train_y
    assert np.array_equal(split.test.images.numpy(), test)
    assert split.test.labels.tolist() == test_y
    assert split.train.classes[1] == "automobile"
    # one pixel spelled out: channel 2 (blue), row 5, column 7 of the first test image
    row = _cifar_rows(test[:1])[0]
    assert int(split.test.images[0, 2, 5, 7]) == int(row[2 * 1024 + 5 * 32 + 7])
    # the data_dir may also be the archive's folder itself, and the registry finds it
    assert torch.equal(
        load_cifar10(tmp_path / "cifar-10-batches-py").test.images, split.test.images
    )
    assert torch.equal(load_dataset("cifar10", tmp_path).test.images, split.test.images)


def test_numpy_scalar_labels_are_accepted(tmp_path):
    _make_cifar10(tmp_path)
    test = _planes(7, 2, 32)
    labels = list(np.array([5, 6], dtype=np.int64))  # numpy scalars, as a re-pickled copy has
    _pickle(
        tmp_path / "cifar-10-batches-py" / "test_batch",
        {"data": _cifar_rows(test), "labels": labels},
    )
    assert load_cifar10(tmp_path).test.labels.tolist() == [5, 6]


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = _planes(2, 4, 32), _planes(3, 2, 32)
    _pickle(
        folder / "train",
        {"data": _cifar_rows(train), "fine_labels": [0, 99, 5, 7], "coarse_labels": [0, 1, 2, 3]},
    )
    _pickle(
        folder / "test",
        {"data": _cifar_rows(test), "fine_labels": [42, 1], "coarse_labels": [4, 5]},
    )
    split = load_cifar100(tmp_path)
    assert np.array_equal(split.train.images.numpy(), train)
    assert split.train.labels.tolist() == [0, 99, 5, 7]
    assert split.test.labels.tolist() == [42, 1]
    assert len(split.train.classes) == 100  # no meta file: classes named by index


def _stl_bytes(images: np.ndarray) -> bytes:
    # each channel column by column: the byte of (channel c, row y, column x) sits at
    # offset c * 96 * 96 + x * 96 + y
    return b"".join(img[c].T.tobytes() for img in images for c in range(3))


def _make_stl(root: Path, unlabeled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    train, test, extra = _planes(4, 3, 96), _planes(5, 2, 96), _planes(6, 2, 96)
    (folder / "train_X.bin").write_bytes(_stl_bytes(train))
    (folder / "train_y.bin").write_bytes(bytes([1, 10, 4]))
    (folder / "test_X.bin").write_bytes(_stl_bytes(test))
    (folder / "test_y.bin").write_bytes(bytes([2, 3]))
    if unlabeled:
        (folder / "unlabeled_X.bin").write_bytes(_stl_bytes(extra))
    names = "airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n"
    (folder / "class_names.txt").write_text(names)
    return train, test, extra


def test_stl10_reads_column_major_planes_and_one_based_labels(tmp_path):
    train, test, _ = _make_stl(tmp_path, unlabeled=False)
    split = load_stl10(tmp_path)
    assert split.train.images.shape == (3, 3, 96, 96)
    assert np.array_equal(split.train.images.numpy(), train)
    assert np.array_equal(split.test.images.numpy(), test)
    assert split.train.labels.tolist() == [0, 9, 3]
    assert split.train.classes[7] == "monkey"
    # byte offset of (image 1, channel 1, row 3, column 40) in the file
    raw = (tmp_path / "stl10_binary" / "train_X.bin").read_bytes()
    offset = 1 * 3 * 96 * 96 + 1 * 96 * 96 + 40 * 96 + 3
    assert int(split.train.images[1, 1, 3, 40]) == raw[offset]


def test_stl10_unlabeled_appends_images_with_label_minus_one(tmp_path):
    train, _, extra = _make_stl(tmp_path, unlabeled=True)
    split = load_stl10_unlabeled(tmp_path)
    assert np.array_equal(split.train.images.numpy(), np.concatenate([train, extra]))
    assert split.train.labels.tolist() == [0, 9, 3, -1, -1]


def test_missing_files_are_named(tmp_path):
    _make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"load_cifar10: missing data_batch_3 in"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="load_cifar100: missing train, test"):
        load_cifar100(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data_dir is required.*stl10_binary"):
        load_stl10(None)
    _make_stl(tmp_path, unlabeled=False)
    with pytest.raises(FileNotFoundError, match=r"missing unlabeled_X\.bin"):
        load_stl10_unlabeled(tmp_path)


def test_truncated_stl_file_is_rejected(tmp_path):
    _make_stl(tmp_path, unlabeled=False)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="not a multiple of 27648"):
        load_stl10(tmp_path)


def test_pickles_that_would_run_code_are_refused(tmp_path):
    _make_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"not a readable CIFAR batch: refusing to load __builtin"):
        load_cifar10(tmp_path)


def _rewrite_batch(root: Path, **changes) -> None:
    path = root / "cifar-10-batches-py" / "data_batch_1"
    with path.open("rb") as f:
        batch = {k.decode(): val for k, val in pickle.load(f, encoding="bytes").items()}
    _pickle(path, {**batch, **changes})


@pytest.mark.parametrize(
    ("dtype", "value"), [(np.float64, 300.7), (np.float32, 12.5), (np.int64, 300), (np.int64, -1)]
)
def test_pixels_that_a_uint8_cast_would_change_are_refused(tmp_path, dtype, value):
    """Before: float or int64 pixels were cast with wraparound (300.7 -> 44)."""
    _make_cifar10(tmp_path)
    data = np.zeros((2, 3072), dtype=dtype)
    data[0, 5] = value
    _rewrite_batch(tmp_path, data=data)
    with pytest.raises(ValueError, match=r"data_batch_1 must hold uint8 pixels \(integers 0-255\)"):
        load_cifar10(tmp_path)


def test_integer_pixels_within_0_255_are_read_exactly(tmp_path):
    train, *_ = _make_cifar10(tmp_path)
    _rewrite_batch(tmp_path, data=_cifar_rows(train[:2]).astype(np.int64))
    assert np.array_equal(load_cifar10(tmp_path).train.images.numpy(), train)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([1.0, 2.7], r"must hold integer labels, got dtype float64"),
        ([-1, 2], r"must hold labels in \[0, 9\], got values in \[-1, 2\]"),
        ([0, 10], r"must hold labels in \[0, 9\], got values in \[0, 10\]"),
        ([True, False], r"must hold integer labels, got dtype bool"),
    ],
)
def test_float_negative_and_out_of_range_labels_are_refused(tmp_path, labels, match):
    """Before: float labels were truncated and negative labels accepted."""
    _make_cifar10(tmp_path)
    _rewrite_batch(tmp_path, labels=labels)
    with pytest.raises(ValueError, match=match):
        load_cifar10(tmp_path)
