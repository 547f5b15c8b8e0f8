r"""Batched tensor augmentations: the five families of the SimCLR/AMCL ablation, m >= 2 views.

A pipeline is chosen by a string of family letters, the flags of the augmentation study in
the ``MIFA-Lab/contrastive2021`` code (its ``readme.md``; lightly's ``SimCLRCollateFunction``
settings) that Fig. 1 of Wang et al., "Adaptive Multi-head Contrastive Learning" (ECCV 2024,
arXiv:2310.05615) builds on, and the ``--augs`` flag of the first AMCL code release
(``LeiWangR/cl``, ``train_eval.py``):

====  ==========================  ============================  ========================
flag  transform                   enabled                       disabled
====  ==========================  ============================  ========================
a     random resized crop         area scale in [0.08, 1]       min scale 1: whole image
b     Gaussian blur               p = 0.5, kernel 10 % of       off
                                  the side, sigma in [0.1, 2]
c     random grayscale            p = 0.2                       off
d     colour jitter               p = 0.8, strength 0.5         off
                                  (0.4 / 0.4 / 0.4 / 0.1)
e     horizontal flip             p = 0.5                       off
====  ==========================  ============================  ========================

Transforms run in SimCLR's order: crop, flip, jitter, grayscale, blur.  Every random
parameter is drawn per image from an explicit CPU ``torch.Generator`` before the images are
touched, then moved to the images' device: a seed fixes the views (bit for bit on one
device; across devices the random parameters are identical and the pixels agree up to
floating-point rounding), and the global RNG is never used.  Images are float tensors
``(B, C, H, W)`` in [0, 1].

Single-channel images (the bundled digits) get the natural restriction: grayscale is the
identity and colour jitter keeps brightness and contrast (saturation and hue are undefined
without colour).

.. note:: Documented choice.
    Turning ``a`` off means a minimum crop scale of 1, i.e. the crop is the whole image; the
    second AMCL code release (``LeiWangR/cl`` at commit ``755799d``) always applies
    ``RandomResizedCrop(scale=(0.08, 1))``, which breaks the 1-to-5 family ablation; the
    first release and contrastive2021 use minimum scale 1.  Crops are continuous (sub-pixel
    boxes resampled bilinearly) rather than torchvision's integer boxes; ten candidate boxes
    are tried per image and the whole image is the fallback, as in torchvision.  Jitter
    applies its four factors in a fixed order (torchvision shuffles them per call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validation as v

__all__ = ["FAMILIES", "FAMILY_NAMES", "Augmentation", "gaussian_blur", "random_resized_crop"]

FAMILIES = "abcde"
#: What each family letter stands for, in a few words (figure titles, error messages).
FAMILY_NAMES = {"a": "crop", "b": "blur", "c": "grayscale", "d": "colour jitter", "e": "flip"}
#: Luma weights (ITU-R BT.601) used for grayscale conversion and contrast.
LUMA = (0.299, 0.587, 0.114)
CROP_TRIES = 10


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def _bernoulli(gen: torch.Generator, n: int, p: float) -> Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) < p


def random_resized_crop(
    x: Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    r"""Crop a random box of each image and resize it back to the image size.

    Per image, a box of area :math:`s\,HW` with :math:`s \sim U(\text{scale})` and aspect
    ratio :math:`r` (width / height, :math:`\log r` uniform in :math:`\log` ``ratio``) is
    placed uniformly inside the image and resampled bilinearly to ``(H, W)``.  Ten
    candidates are drawn; an image with no candidate that fits gets the whole image.  With
    ``scale=(1, 1)`` no box other than the whole image fits, so the result is ``x``.

    Args:
        x: ``(B, C, H, W)`` float images.
        generator: CPU generator all random parameters are drawn from.
        scale: range of the box area as a fraction of the image area, ``0 < low <= high <= 1``.
        ratio: range of the box aspect ratio, ``0 < low <= high``.

    Returns:
        ``(B, C, H, W)`` cropped images on ``x``'s device.
    """
    fn = "random_resized_crop"
    v.check_tensor(fn, "x", x, ndim=4)
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"{fn}: scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"{fn}: ratio must satisfy 0 < low <= high, got {ratio}")
    b, _, h, w = x.shape
    if scale[0] == 1.0:
        return x
    area = _uniform(generator, b * CROP_TRIES, *scale).view(b, CROP_TRIES)
    log_r = _uniform(generator, b * CROP_TRIES, math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(log_r).view(b, CROP_TRIES)
    # box sides as fractions of the image sides: (fw W)(fh H) = s H W and fw W / (fh H) = r
    fw = torch.sqrt(area * r * h / w)
    fh = torch.sqrt(area / r * w / h)
    fits = (fw <= 1.0) & (fh <= 1.0)
    first = fits.to(torch.int64).argmax(dim=1)  # index of the first fitting candidate
    any_fit = fits.any(dim=1)
    rows = torch.arange(b)
    fw = torch.where(any_fit, fw[rows, first], torch.ones(b, dtype=torch.float64))
    fh = torch.where(any_fit, fh[rows, first], torch.ones(b, dtype=torch.float64))
    # box origin in pixels, uniform over the positions that keep the box inside the image
    x0 = (1.0 - fw) * w * torch.rand(b, generator=generator, dtype=torch.float64)
    y0 = (1.0 - fh) * h * torch.rand(b, generator=generator, dtype=torch.float64)
    rows_map = _resize_matrix(y0, fh * h, h).to(device=x.device, dtype=x.dtype)
    cols_map = _resize_matrix(x0, fw * w, w).to(device=x.device, dtype=x.dtype)
    return rows_map[:, None] @ x @ cols_map[:, None].transpose(-1, -2)


def _resize_matrix(start: Tensor, size: Tensor, n: int) -> Tensor:
    """``(B, n, n)`` bilinear resampling of the interval ``[start, start + size)`` to n pixels.

    Output pixel ``i`` reads input position ``start + (i + 1/2) size / n - 1/2`` (pixel
    centres, the ``align_corners=False`` convention), clamped to the border; the whole
    image (``start=0, size=n``) gives the identity.  A box crop is ``R_y @ x @ R_x^T``.
    """
    i = torch.arange(n, dtype=torch.float64)
    src = (start[:, None] + (i + 0.5) * size[:, None] / n - 0.5).clamp(0.0, n - 1.0)
    low = src.floor()
    frac = src - low
    low = low.to(torch.int64)
    high = (low + 1).clamp(max=n - 1)
    matrix = torch.zeros(start.shape[0], n, n, dtype=torch.float64)
    matrix.scatter_add_(2, low[..., None], (1.0 - frac)[..., None])
    matrix.scatter_add_(2, high[..., None], frac[..., None])
    return matrix


def blur_kernel_size(side: int, fraction: float = 0.1) -> int:
    """The odd blur kernel size for an image side: ``fraction * side`` rounded down, >= 3."""
    k = int(fraction * side)
    k = k if k % 2 else k - 1
    return max(3, k)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    r"""Blur each image with its own isotropic Gaussian, separably, with reflect padding.

    Image :math:`b` is convolved with the normalised kernel
    :math:`g_b(t) \propto \exp(-t^2 / (2\sigma_b^2))`, :math:`t = -k/2, \dots, k/2`, along
    rows and then columns.

    Args:
        x: ``(B, C, H, W)`` float images, ``H, W > kernel_size // 2``.
        sigma: ``(B,)`` positive standard deviations in pixels.
        kernel_size: odd kernel size >= 1.

    Returns:
        ``(B, C, H, W)`` blurred images.
    """
    fn = "gaussian_blur"
    v.check_tensor(fn, "x", x, ndim=4)
    v.check_int(fn, "kernel_size", kernel_size, low=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"{fn}: kernel_size must be odd, got {kernel_size}")
    if sigma.shape != (x.shape[0],) or not bool((sigma > 0).all()):
        raise ValueError(
            f"{fn}: sigma must be a ({x.shape[0]},) tensor of positive values, got shape "
            f"{tuple(sigma.shape)}"
        )
    h, w = x.shape[-2:]
    t = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    g = torch.exp(-(t[None, :] ** 2) / (2.0 * sigma.detach().cpu().double()[:, None] ** 2))
    g = (g / g.sum(dim=1, keepdim=True)).to(device=x.device, dtype=x.dtype)
    pad = kernel_size // 2
    y = F.pad(x, (0, 0, pad, pad), mode="reflect")  # along rows (height)
    y = sum(g[:, j, None, None, None] * y[..., j : j + h, :] for j in range(kernel_size))
    y = F.pad(y, (pad, pad, 0, 0), mode="reflect")  # along columns (width)
    return sum(g[:, j, None, None, None] * y[..., j : j + w] for j in range(kernel_size))


def _gray(x: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luma of RGB images (the image itself for one channel)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=1)
    value, _ = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(
        value == r,
        ((g - b) / safe) % 6.0,
        torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = torch.where(chroma > 0, hue / 6.0, torch.zeros_like(hue))
    sat = torch.where(value > 0, chroma / torch.where(value > 0, value, 1.0), 0.0)
    return torch.stack([hue, sat, value], dim=1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    hue, sat, value = x.unbind(dim=1)
    k = torch.stack([(n + hue * 6.0) % 6.0 for n in (5.0, 3.0, 1.0)], dim=1)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return value[:, None] - (value * sat)[:, None] * ramp


def _per_image(factor: Tensor, x: Tensor) -> Tensor:
    return factor.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


@dataclass(frozen=True)
class Augmentation:
    r"""A view-generating pipeline made of the families named in ``families``.

    Calling it on a batch returns one augmented view; :meth:`views` returns ``m`` of them.
    Parameters other than ``families`` default to the SimCLR / contrastive2021 values of the
    module table; change them only with a reason (e.g. a larger ``crop_min_scale`` for 8x8
    digits, where a 0.08-area crop is about two pixels).

    Args:
        families: letters from ``"abcde"``, each at most once, in any order (``""`` gives the
            identity).
        crop_min_scale: minimum crop area fraction when ``a`` is on, in (0, 1].
        blur_p, gray_p, jitter_p, flip_p: per-image probabilities of b, c, d, e.
        blur_sigma: range of the blur standard deviation in pixels.
        jitter_strength: colour jitter strength :math:`s`: brightness, contrast and
            saturation factors uniform in :math:`[1 - 0.8s, 1 + 0.8s]`, hue shift uniform
            in :math:`[-0.2s, 0.2s]` turns.

    Example:
        >>> import torch
        >>> aug = Augmentation("ae")
        >>> x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> views = aug.views(x, 3, torch.Generator().manual_seed(1))
        >>> tuple(views.shape)
        (3, 4, 1, 8, 8)
        >>> same = aug.views(x, 3, torch.Generator().manual_seed(1))
        >>> bool(torch.equal(views, same))  # same seed, same views
        True
        >>> bool(torch.equal(Augmentation("")(x, torch.Generator()), x))
        True
    """

    families: str = FAMILIES
    crop_min_scale: float = 0.08
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    gray_p: float = 0.2
    jitter_p: float = 0.8
    jitter_strength: float = 0.5
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        fn = "Augmentation"
        letters = set(self.families)
        if not letters <= set(FAMILIES) or len(letters) != len(self.families):
            names = ", ".join(f"{k} {name}" for k, name in FAMILY_NAMES.items())
            raise ValueError(
                f"{fn}: families must be distinct letters from {FAMILIES!r} ({names}), "
                f"got {self.families!r}"
            )
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError(f"{fn}: crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        for name in ("blur_p", "gray_p", "jitter_p", "flip_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{fn}: {name} must be a probability in [0, 1], got {p}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(
                f"{fn}: blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}"
            )
        if not 0.0 <= self.jitter_strength <= 1.25:
            raise ValueError(
                f"{fn}: jitter_strength must be in [0, 1.25] (factors stay >= 0), got "
                f"{self.jitter_strength}"
            )

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One augmented view of each image of ``x`` (``(B, C, H, W)`` floats in [0, 1])."""
        v.check_tensor("Augmentation", "x", x, ndim=4)
        b, c, h, w = x.shape
        if "a" in self.families:
            x = random_resized_crop(x, generator, scale=(self.crop_min_scale, 1.0))
        if "e" in self.families:
            flip = _per_image(_bernoulli(generator, b, self.flip_p), x).bool()
            x = torch.where(flip, x.flip(-1), x)
        if "d" in self.families:
            x = self._jitter(x, generator)
        if "c" in self.families and c == 3:
            gray = _per_image(_bernoulli(generator, b, self.gray_p), x).bool()
            x = torch.where(gray, _gray(x).expand_as(x), x)
        if "b" in self.families:
            chosen = _per_image(_bernoulli(generator, b, self.blur_p), x).bool()
            sigma = _uniform(generator, b, *self.blur_sigma)
            blurred = gaussian_blur(x, sigma.to(x.device), blur_kernel_size(min(h, w)))
            x = torch.where(chosen, blurred, x)
        return x

    def _jitter(self, x: Tensor, gen: torch.Generator) -> Tensor:
        b = x.shape[0]
        s, hue_range = 0.8 * self.jitter_strength, 0.2 * self.jitter_strength
        chosen = _per_image(_bernoulli(gen, b, self.jitter_p), x).bool()
        brightness = _per_image(_uniform(gen, b, 1.0 - s, 1.0 + s), x)
        contrast = _per_image(_uniform(gen, b, 1.0 - s, 1.0 + s), x)
        y = (x * brightness).clamp(0.0, 1.0)
        mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
        y = ((y - mean) * contrast + mean).clamp(0.0, 1.0)
        if x.shape[1] == 3:
            saturation = _per_image(_uniform(gen, b, 1.0 - s, 1.0 + s), x)
            hue = _per_image(_uniform(gen, b, -hue_range, hue_range), x)[:, 0]
            gray = _gray(y)
            y = ((y - gray) * saturation + gray).clamp(0.0, 1.0)
            hsv = _rgb_to_hsv(y)
            hsv = torch.stack([(hsv[:, 0] + hue) % 1.0, hsv[:, 1], hsv[:, 2]], dim=1)
            y = _hsv_to_rgb(hsv).clamp(0.0, 1.0)
        return torch.where(chosen, y, x)

    def views(self, x: Tensor, m: int, generator: torch.Generator) -> Tensor:
        """``m`` independent views of each image: ``(m, B, C, H, W)``, m >= 1."""
        v.check_int("Augmentation.views", "m", m, low=1)
        return torch.stack([self(x, generator) for _ in range(m)])
