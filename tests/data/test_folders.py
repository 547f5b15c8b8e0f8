"""The ImageFolder reader on tiny folders of generated images (PNG and JPEG, any size)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_files import BLUE, GREEN, RED, make_image_folder, solid
from PIL import Image

from amcl_lab import engine
from amcl_lab.data import DATASETS, load_dataset
from amcl_lab.data.folders import load_image_folder, read_folder


def test_reads_classes_in_sorted_order_with_labels_and_rgb_pixels(tmp_path):
    make_image_folder(tmp_path)
    split = load_image_folder(tmp_path, size=8)
    train, test = split.train, split.test
    assert train.classes == ("a_dog", "b_cat") == test.classes
    assert train.images.shape == (7, 3, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]  # a_dog: 3 JPEG + the grey PNG
    assert test.labels.tolist() == [0, 1]
    red = train.images[4].float().mean(dim=(1, 2))
    assert red.tolist() == pytest.approx(RED, abs=1)
    blue = train.images[0].float().mean(dim=(1, 2))
    assert blue.tolist() == pytest.approx(BLUE, abs=8)  # JPEG is lossy
    grey = train.images[3]
    assert torch.all(grey == 77)  # grey-scale converted to three equal channels
    assert split.name == "image_folder" and split.num_classes == 2


def test_shorter_side_is_resized_and_the_centre_is_cropped(tmp_path):
    img = np.zeros((10, 30, 3), dtype=np.uint8)  # 30 wide, 10 high: red | green | blue thirds
    img[:, :10], img[:, 10:20], img[:, 20:] = RED, GREEN, BLUE
    folder = tmp_path / "train" / "x"
    folder.mkdir(parents=True)
    Image.fromarray(img).save(folder / "stripes.png")
    data = read_folder(tmp_path / "train", size=10)
    assert data.images.shape == (1, 3, 10, 10)
    assert data.images[0, :, 5, 5].tolist() == list(GREEN)  # only the middle third is kept
    small = read_folder(tmp_path / "train", size=5)  # 10 -> 5 high, 30 -> 15 wide, crop 5
    assert small.images.shape == (1, 3, 5, 5)
    assert small.images[0, 1, 2, 2] > 150  # still the green centre


def test_test_folder_may_be_called_test_and_shares_the_training_labels(tmp_path):
    make_image_folder(tmp_path, test="test")
    assert load_image_folder(tmp_path, size=8).test.labels.tolist() == [0, 1]


def test_registered_datasets_read_through_load_dataset(tmp_path):
    assert {"imagenet100", "image_folder"} <= set(DATASETS)
    make_image_folder(tmp_path / "imagenet100")
    split = load_dataset("imagenet100", tmp_path)
    assert split.train.images.shape[1:] == (3, 96, 96)
    assert split.name == "imagenet100"
    assert load_dataset("imagenet100", tmp_path / "imagenet100").train.images.shape[0] == 7
    make_image_folder(tmp_path / "plain")
    assert load_dataset("image_folder", tmp_path / "plain").train.images.shape[1:] == (3, 64, 64)


def test_missing_folders_mismatched_classes_and_bad_images_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir is required"):
        load_dataset("imagenet100", None)
    with pytest.raises(FileNotFoundError, match=r"missing .*imagenet100/train"):
        load_dataset("imagenet100", tmp_path)
    make_image_folder(tmp_path / "a")
    solid(tmp_path / "a" / "val" / "c_owl" / "0.png", GREEN)
    with pytest.raises(ValueError, match="differ from the training classes: extra c_owl"):
        load_image_folder(tmp_path / "a", size=8)
    make_image_folder(tmp_path / "b")
    (tmp_path / "b" / "train" / "empty").mkdir()
    (tmp_path / "b" / "val" / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(tmp_path / "b", size=8)
    make_image_folder(tmp_path / "c")
    (tmp_path / "c" / "train" / "b_cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=r"cannot read the image .*broken\.png"):
        load_image_folder(tmp_path / "c", size=8)


def test_an_image_folder_trains_two_steps_through_the_engine(tmp_path):
    make_image_folder(tmp_path)
    config = engine.TrainConfig(
        dataset="image_folder",
        data_dir=str(tmp_path),
        encoder="cnn",
        width=4,
        proj_hidden=8,
        proj_dim=4,
        batch_size=4,
        steps=2,
        probe_steps=2,
        knn_k=2,
        device="cpu",
    )
    result = engine.train(config)
    assert [r["step"] for r in result.history] == [0, 2]
