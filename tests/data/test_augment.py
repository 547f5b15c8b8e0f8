"""Augmentations: each family against an independent reference, determinism, the a-off rule."""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F

from amcl_lab.data import Augmentation
from amcl_lab.data import augment as A


def _images(n=6, c=3, h=12, w=10, seed=0, dtype=torch.float64):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_box_resampling_matches_grid_sample():
    """R_y x R_x^T equals bilinear grid_sample of the same boxes (border padding)."""
    x = _images()
    n, _, h, w = x.shape
    y0 = torch.tensor([0.0, 1.3, 2.0, 0.5, 0.0, 4.1], dtype=torch.float64)
    x0 = torch.tensor([0.0, 0.7, 3.0, 1.0, 0.0, 2.2], dtype=torch.float64)
    fh = torch.tensor([1.0, 0.5, 0.3, 0.8, 0.2, 0.6], dtype=torch.float64)
    fw = torch.tensor([1.0, 0.6, 0.4, 0.9, 0.3, 0.7], dtype=torch.float64)
    rows, cols = A._resize_matrix(y0, fh * h, h), A._resize_matrix(x0, fw * w, w)
    ours = rows[:, None] @ x @ cols[:, None].transpose(-1, -2)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 1, 1] = fw, fh
    theta[:, 0, 2] = (x0 + fw * w / 2) / w * 2 - 1
    theta[:, 1, 2] = (y0 + fh * h / 2) / h * 2 - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    reference = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[0], x[0], rtol=0, atol=0)  # whole box: identity


def test_crop_with_min_scale_one_is_the_whole_image():
    """Family a off means min scale 1, i.e. no crop at all (the first AMCL release's reading)."""
    x = _images()
    assert torch.equal(A.random_resized_crop(x, _gen(), scale=(1.0, 1.0)), x)
    assert torch.equal(Augmentation("a", crop_min_scale=1.0)(x, _gen()), x)
    # without a, nothing crops: with the other families switched off the view is x itself
    off = Augmentation("bcde", blur_p=0.0, gray_p=0.0, jitter_p=0.0, flip_p=0.0)
    assert torch.equal(off(x, _gen()), x)


def test_crop_changes_images_and_keeps_range():
    x = _images(n=32, c=1, h=8, w=8)
    y = A.random_resized_crop(x, _gen(), scale=(0.08, 0.5))
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    assert y.min() >= 0.0 and y.max() <= 1.0  # convex combinations of pixels


def test_blur_matches_a_2d_convolution_with_reflect_padding():
    x = _images(n=4, c=3, h=9, w=11)
    sigma = torch.tensor([0.3, 0.8, 1.5, 2.0], dtype=torch.float64)
    ours = A.gaussian_blur(x, sigma, 5)
    t = torch.arange(5, dtype=torch.float64) - 2
    expected = []
    for i in range(4):
        g = torch.exp(-(t**2) / (2 * sigma[i] ** 2))
        g = g / g.sum()
        kernel = (g[:, None] * g[None, :]).expand(3, 1, 5, 5)
        padded = F.pad(x[i : i + 1], (2, 2, 2, 2), mode="reflect")
        expected.append(F.conv2d(padded, kernel, groups=3))
    torch.testing.assert_close(ours, torch.cat(expected), rtol=0, atol=1e-12)
    constant = torch.full((2, 1, 6, 6), 0.25, dtype=torch.float64)
    torch.testing.assert_close(A.gaussian_blur(constant, sigma[:2], 3), constant)


def test_kernel_size_is_odd_tenth_of_the_side_at_least_three():
    assert [A.blur_kernel_size(s) for s in (8, 28, 32, 96, 224)] == [3, 3, 3, 9, 21]


def test_hsv_round_trip_and_conversion_match_colorsys():
    x = _images(n=3, c=3, h=4, w=4)
    hsv = A._rgb_to_hsv(x)
    for b, i, j in [(0, 0, 0), (1, 2, 3), (2, 3, 1)]:
        expected = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
        torch.testing.assert_close(hsv[b, :, i, j], torch.tensor(expected, dtype=x.dtype))
    torch.testing.assert_close(A._hsv_to_rgb(hsv), x, rtol=0, atol=1e-12)


def test_flip_and_grayscale_with_probability_one():
    x = _images()
    assert torch.equal(Augmentation("e", flip_p=1.0)(x, _gen()), x.flip(-1))
    gray = Augmentation("c", gray_p=1.0)(x, _gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(gray[:, c], luma)
    single = _images(c=1)
    assert torch.equal(Augmentation("c", gray_p=1.0)(single, _gen()), single)  # identity


def test_single_channel_jitter_is_brightness_and_contrast_only():
    """A constant grey image stays constant (contrast pivots on the mean) and is only scaled."""
    x = torch.full((16, 1, 5, 5), 0.5, dtype=torch.float64)
    y = Augmentation("d", jitter_p=1.0)(x, _gen())
    per_image = y.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image))
    assert per_image.min() >= 0.5 * 0.6 - 1e-12 and per_image.max() <= 0.5 * 1.4 + 1e-12
    assert per_image[:, 0].std() > 0  # factors differ between images


def test_colour_jitter_moves_hue_and_keeps_range():
    x = _images(n=8)
    y = Augmentation("d", jitter_p=1.0)(x, _gen())
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert not torch.allclose(A._rgb_to_hsv(y)[:, 0], A._rgb_to_hsv(x)[:, 0])


def test_views_are_deterministic_given_the_seed_and_differ_between_views():
    x = _images(n=4, c=3, h=16, w=16, dtype=torch.float32)
    aug = Augmentation("abcde")
    first = aug.views(x, 3, _gen(7))
    assert first.shape == (3, 4, 3, 16, 16)
    assert torch.equal(first, aug.views(x, 3, _gen(7)))
    assert not torch.equal(first, aug.views(x, 3, _gen(8)))
    assert not torch.equal(first[0], first[1])
    assert first.min() >= 0.0 and first.max() <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"families": "abz"}, "distinct letters from 'abcde'"),
        ({"families": "aa"}, "distinct letters"),
        ({"crop_min_scale": 0.0}, r"crop_min_scale must be in \(0, 1\]"),
        ({"flip_p": 1.5}, r"flip_p must be a probability"),
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma"),
        ({"jitter_strength": 2.0}, "jitter_strength"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmentation(**kwargs)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="m must be >= 1"):
        Augmentation().views(_images(), 0, _gen())
    with pytest.raises(ValueError, match="4-D tensor"):
        Augmentation()(torch.rand(3, 8, 8), _gen())
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        A.gaussian_blur(_images(), torch.ones(6), 4)
