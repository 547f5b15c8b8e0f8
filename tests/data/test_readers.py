"""CIFAR-10/100 and STL-10 readers on tiny files written in the standard distributed formats.

The files are built by :mod:`data_files` from the published format descriptions (not with
the readers' code).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import cifar_rows, make_cifar10, make_stl10, pickle_batch, planes

from amcl_lab.data import load_dataset
from amcl_lab.data.readers import load_cifar10, load_cifar100, load_stl10, load_stl10_unlabeled


def test_cifar10_reads_planes_labels_and_class_names(tmp_path):
    train, train_y, test, test_y = make_cifar10(tmp_path)
    split = load_cifar10(tmp_path)
    assert split.train.images.shape == (10, 3, 32, 32)
    assert np.array_equal(split.train.images.numpy(), train)
    assert split.train.labels.tolist() == train_y
    assert np.array_equal(split.test.images.numpy(), test)
    assert split.test.labels.tolist() == test_y
    assert split.train.classes[1] == "automobile"
    # one pixel spelled out: channel 2 (blue), row 5, column 7 of the first test image
    row = cifar_rows(test[:1])[0]
    assert int(split.test.images[0, 2, 5, 7]) == int(row[2 * 1024 + 5 * 32 + 7])
    # the data_dir may also be the archive's folder itself, and the registry finds it
    assert torch.equal(
        load_cifar10(tmp_path / "cifar-10-batches-py").test.images, split.test.images
    )
    assert torch.equal(load_dataset("cifar10", tmp_path).test.images, split.test.images)


def test_numpy_scalar_labels_are_accepted(tmp_path):
    make_cifar10(tmp_path)
    test = planes(7, 2, 32)
    labels = list(np.array([5, 6], dtype=np.int64))  # numpy scalars, as a re-pickled copy has
    pickle_batch(
        tmp_path / "cifar-10-batches-py" / "test_batch",
        {"data": cifar_rows(test), "labels": labels},
    )
    assert load_cifar10(tmp_path).test.labels.tolist() == [5, 6]


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = planes(2, 4, 32), planes(3, 2, 32)
    pickle_batch(
        folder / "train",
        {"data": cifar_rows(train), "fine_labels": [0, 99, 5, 7], "coarse_labels": [0, 1, 2, 3]},
    )
    pickle_batch(
        folder / "test",
        {"data": cifar_rows(test), "fine_labels": [42, 1], "coarse_labels": [4, 5]},
    )
    split = load_cifar100(tmp_path)
    assert np.array_equal(split.train.images.numpy(), train)
    assert split.train.labels.tolist() == [0, 99, 5, 7]
    assert split.test.labels.tolist() == [42, 1]
    assert len(split.train.classes) == 100  # no meta file: classes named by index


def test_stl10_reads_column_major_planes_and_one_based_labels(tmp_path):
    train, test, _ = make_stl10(tmp_path, unlabeled=False)
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
    train, _, extra = make_stl10(tmp_path, unlabeled=True)
    split = load_stl10_unlabeled(tmp_path)
    assert np.array_equal(split.train.images.numpy(), np.concatenate([train, extra]))
    assert split.train.labels.tolist() == [0, 9, 3, -1, -1]


def test_missing_files_are_named(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"load_cifar10: missing data_batch_3 in"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="load_cifar100: missing train, test"):
        load_cifar100(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data_dir is required.*stl10_binary"):
        load_stl10(None)
    make_stl10(tmp_path, unlabeled=False)
    with pytest.raises(FileNotFoundError, match=r"missing unlabeled_X\.bin"):
        load_stl10_unlabeled(tmp_path)


def test_truncated_stl_file_is_rejected(tmp_path):
    make_stl10(tmp_path, unlabeled=False)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="not a multiple of 27648"):
        load_stl10(tmp_path)


def test_pickles_that_would_run_code_are_refused(tmp_path):
    make_cifar10(tmp_path)

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
    pickle_batch(path, {**batch, **changes})


@pytest.mark.parametrize(
    ("dtype", "value"), [(np.float64, 300.7), (np.float32, 12.5), (np.int64, 300), (np.int64, -1)]
)
def test_pixels_that_a_uint8_cast_would_change_are_refused(tmp_path, dtype, value):
    """Before: float or int64 pixels were cast with wraparound (300.7 -> 44)."""
    make_cifar10(tmp_path)
    data = np.zeros((2, 3072), dtype=dtype)
    data[0, 5] = value
    _rewrite_batch(tmp_path, data=data)
    with pytest.raises(ValueError, match=r"data_batch_1 must hold uint8 pixels \(integers 0-255\)"):
        load_cifar10(tmp_path)


def test_integer_pixels_within_0_255_are_read_exactly(tmp_path):
    train, *_ = make_cifar10(tmp_path)
    _rewrite_batch(tmp_path, data=cifar_rows(train[:2]).astype(np.int64))
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
    make_cifar10(tmp_path)
    _rewrite_batch(tmp_path, labels=labels)
    with pytest.raises(ValueError, match=match):
        load_cifar10(tmp_path)
