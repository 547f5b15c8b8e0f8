r"""Finite augmentation graphs: toy data whose augmentation kernel is known exactly.

An augmentation graph has :math:`n` clean images with probabilities :math:`p(x)` and
:math:`M` augmented points; each image is augmented to point :math:`a` with probability
:math:`p(a \mid x)`.  Everything the kernel view of self-supervised learning talks about is
then a small matrix: the marginal :math:`p(a) = \sum_x p(x)\,p(a \mid x)`, the positive-pair
joint :math:`w(a, a') = \sum_x p(x)\,p(a \mid x)\,p(a' \mid x)` (two independent
augmentations of one image), the kernel :math:`k = w / (p\,p^\top)` and the eigenpairs of its
integral operator :math:`T` on :math:`L^2(p)` (the augmentation graph of HaoChen et al.,
NeurIPS 2021, arXiv:2106.04156, and the kernel reading of Ghosh, Agrawal et al.,
NeurIPS 2024, arXiv:2312.10725).
The losses of :mod:`amcl_lab.losses.kernel` are tested, proved and demonstrated on these
graphs, and :meth:`AugmentationGraph.sample_views` draws the ``m`` views per image that a
training step sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch
from torch import Tensor

from .. import _validation as v
from ..losses.kernel import check_probabilities

__all__ = [
    "AugmentationGraph",
    "Eigenpairs",
    "ViewSample",
    "clustered_augmentation_graph",
    "random_augmentation_graph",
]


def _row_atol(dtype: torch.dtype) -> float:
    """How far the prior and each row of the conditional may sum from 1 in ``dtype``.

    A graph is the ground truth of the identities it is used to check, so it must be
    normalised to the accuracy of its dtype: sqrt(machine eps), 1.5e-8 in float64.
    """
    return math.sqrt(torch.finfo(dtype).eps)


class Eigenpairs(NamedTuple):
    """Eigenvalues (decreasing) of :math:`T` and its eigenfunctions as columns.

    ``functions[:, k]`` is :math:`\\varphi_k(a)`, orthonormal in :math:`L^2(p)`:
    ``functions.T @ diag(marginal) @ functions`` is the identity.
    """

    values: Tensor
    functions: Tensor


class ViewSample(NamedTuple):
    """Indices of sampled images ``(B,)`` and of their ``m`` augmentations ``(B, m)``."""

    images: Tensor
    augmentations: Tensor


@dataclass(frozen=True, eq=False)
class AugmentationGraph:
    r"""A finite augmentation graph given by :math:`p(x)` and :math:`p(a \mid x)`.

    Derived matrices are computed once, on first use, in the dtype of ``conditional``.

    Attributes:
        prior: ``(n,)`` image probabilities :math:`p(x)`, summing to 1.
        conditional: ``(n, M)`` augmentation probabilities, row ``x`` is
            :math:`p(\cdot \mid x)` (rows sum to 1); every augmented point must be reachable
            (:math:`p(a) > 0`) for the kernel to be defined.
        labels: optional ``(n,)`` integer class of each image (the clustered generator sets
            it), for linear probes on the learned features.

    Raises:
        ValueError: shapes that do not match, entries that are negative or do not sum to 1,
            an augmented point with zero probability, or malformed labels.
    """

    prior: Tensor
    conditional: Tensor
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        fn = "AugmentationGraph"
        v.check_tensor(fn, "conditional", self.conditional, ndim=2, min_rows=1)
        n = self.conditional.shape[0]
        atol = _row_atol(self.conditional.dtype)
        check_probabilities(fn, "prior", self.prior, (n,), atol=atol)
        v.check_same_device(fn, [("prior", self.prior), ("conditional", self.conditional)])
        if bool((self.conditional < 0).any()):
            raise ValueError(f"{fn}: conditional must be non-negative")
        worst = float((self.conditional.sum(dim=1, dtype=torch.float64) - 1.0).abs().max())
        if worst > atol:
            raise ValueError(
                f"{fn}: each row of conditional must sum to 1 (p(a | x)), worst row is off by "
                f"{worst:.3e}"
            )
        unreachable = torch.nonzero(self.marginal <= 0).flatten()
        if unreachable.numel():
            raise ValueError(
                f"{fn}: augmented points {unreachable.tolist()[:5]} have p(a) = 0, so the "
                "kernel is undefined there; drop them from conditional"
            )
        if self.labels is not None:
            v.check_labels(fn, self.labels, n)

    @property
    def num_images(self) -> int:
        """The number of clean images :math:`n`."""
        return self.conditional.shape[0]

    @property
    def num_augmentations(self) -> int:
        """The number of augmented points :math:`M`."""
        return self.conditional.shape[1]

    @cached_property
    def marginal(self) -> Tensor:
        r"""``(M,)`` :math:`p(a) = \sum_x p(x)\,p(a \mid x)`."""
        return self.prior.to(self.conditional.dtype) @ self.conditional

    @cached_property
    def joint(self) -> Tensor:
        r"""``(M, M)`` positive-pair probabilities :math:`w(a, a')`, symmetric, summing to 1."""
        weighted = self.prior.to(self.conditional.dtype)[:, None] * self.conditional
        joint = self.conditional.T @ weighted
        return (joint + joint.T) / 2  # exactly symmetric (a matmul may round (a, a') apart)

    @cached_property
    def kernel(self) -> Tensor:
        r"""``(M, M)`` augmentation kernel :math:`k(a, a') = w(a, a') / (p(a)\,p(a'))`."""
        return self.joint / torch.outer(self.marginal, self.marginal)

    @cached_property
    def operator_matrix(self) -> Tensor:
        r"""``(M, M)`` symmetric matrix :math:`D^{1/2} K D^{1/2}` with the eigenvalues of :math:`T`.

        :math:`D = \mathrm{diag}(p)`; this is HaoChen et al.'s normalised adjacency
        :math:`D^{-1/2} W D^{-1/2}`, whose Frobenius norm is the HS norm of :math:`T`.
        """
        root = self.marginal.sqrt()
        return self.joint / torch.outer(root, root)

    @cached_property
    def eigenpairs(self) -> Eigenpairs:
        r""":class:`Eigenpairs` of :math:`T`: values in :math:`[0, 1]`, the first is 1.

        The top eigenfunction is the constant 1 (up to sign); signs of the others are
        arbitrary.  Eigenfunctions are :math:`D^{-1/2}` times the eigenvectors of
        :attr:`operator_matrix`.
        """
        values, vectors = torch.linalg.eigh(self.operator_matrix)
        order = torch.argsort(values, descending=True)
        functions = vectors[:, order] / self.marginal.sqrt()[:, None]
        return Eigenpairs(values[order], functions)

    def optimal_features(self, dim: int, *, c: float = 1.0) -> Tensor:
        r"""A minimiser of :func:`~amcl_lab.losses.kernel_loss` with ``dim`` features.

        Eckart-Young in :math:`L^2(p)`: the top-``dim`` eigenfunctions :math:`\varphi_k` of
        :math:`T_c = (1 - c)I + cT`, which are those of :math:`T`, scaled by
        :math:`\sqrt{\max(0, 1 - c + c\lambda_k)}`.  Every rotation :math:`F^* Q` is a
        minimiser too; the minimum is the energy of the remaining eigenvalues of :math:`T_c`
        (the sum of squares of its eigenvalues beyond the top ``dim``, plus those of any
        negative ones among the top ``dim``).  With :math:`c = 1/(2\beta)` the squared
        feature norms are the target norms :math:`\max(0, 1 - (1 - \lambda_k)/(2\beta))`.

        Args:
            dim: number of features (the projector dimension), ``1 <= dim <= M``.
            c: weight of :math:`T` in :math:`T_c`, finite and >= 0.

        Returns:
            ``(M, dim)`` feature values on the augmented points.

        Raises:
            ValueError: ``dim`` outside ``[1, M]`` or a negative ``c``.
        """
        fn = "AugmentationGraph.optimal_features"
        v.check_int(fn, "dim", dim, low=1, high=self.num_augmentations)
        v.check_positive_float(fn, "c", c, allow_zero=True)
        values, functions = self.eigenpairs
        scale = (1.0 - c + c * values[:dim]).clamp_min(0.0).sqrt()
        return functions[:, :dim] * scale

    def population_views(self, features: Tensor) -> tuple[Tensor, Tensor]:
        r"""Exact-expectation inputs of :func:`~amcl_lab.losses.invariance_orthogonality_loss`.

        Every image "sees" every augmented point, weighted by its probability: the views
        are ``features`` repeated for each image, ``(n, M, d)`` (a broadcast view, no copy),
        and the weights are :math:`p(x)\,p(a \mid x)`, ``(n, M)``.

        Args:
            features: ``(M, d)`` feature values on the augmented points.

        Returns:
            ``(views, weights)``.

        Raises:
            ValueError: ``features`` is not ``(M, d)`` with finite floating values.
        """
        fn = "AugmentationGraph.population_views"
        v.check_tensor(fn, "features", features, ndim=2)
        if features.shape[0] != self.num_augmentations:
            raise ValueError(
                f"{fn}: features must have {self.num_augmentations} rows (one per augmented "
                f"point), got shape {tuple(features.shape)}"
            )
        n = self.num_images
        views = features.unsqueeze(0).expand(n, *features.shape)
        weights = self.prior.to(self.conditional.dtype)[:, None] * self.conditional
        return views, weights

    def sample_views(
        self,
        views: int,
        *,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ViewSample:
        r"""Draw ``views`` i.i.d. augmentations :math:`a \sim p(\cdot \mid x)` per image.

        Args:
            views: number of views :math:`m \ge 1` per image.
            batch_size: ``None`` (default) takes every image once, in order (a stratified
                sample: pass ``images=None`` to :meth:`empirical_kernel`); an int ``B >= 1``
                draws ``B`` images i.i.d. from :math:`p(x)`, as a training batch.
            generator: source of randomness (same generator state, same sample).

        Returns:
            :class:`ViewSample` with ``images`` ``(B,)`` and ``augmentations`` ``(B, m)``,
            int64 on the graph's device.  ``features[sample.augmentations]`` gives the
            ``(B, m, d)`` views of a feature table.

        Raises:
            ValueError: ``views`` < 1 or ``batch_size`` < 1.
        """
        fn = "AugmentationGraph.sample_views"
        v.check_int(fn, "views", views, low=1)
        device = self.conditional.device
        if batch_size is None:
            images = torch.arange(self.num_images, device=device)
        else:
            v.check_int(fn, "batch_size", batch_size, low=1)
            images = torch.multinomial(
                self.prior.to(self.conditional.dtype), batch_size, True, generator=generator
            )
        augmentations = torch.multinomial(
            self.conditional[images], views, True, generator=generator
        )
        return ViewSample(images, augmentations)

    def empirical_kernel(self, augmentations: Tensor, *, images: Tensor | None = None) -> Tensor:
        r"""Multi-view estimate of :attr:`kernel` from sampled views.

        Counts ordered pairs of *distinct* views of the same image:

        .. math::

            \hat w(a, a') = \sum_n \omega_n \frac{1}{m(m-1)} \sum_{s \ne t}
                \mathbb 1[a_{ns} = a]\,\mathbb 1[a_{nt} = a'],
            \qquad \hat k = \hat w / (p\,p^\top)

        with :math:`\omega_n = p(x_n)` when row :math:`n` is image :math:`n` of the graph
        (``images=None``, from ``sample_views(m)``) and :math:`\omega_n = 1/B` when the rows
        are images drawn from :math:`p(x)`.  The estimate is unbiased for every
        :math:`m \ge 2` and, for the stratified sample, converges to :math:`k` as :math:`m`
        grows: its mean squared error falls at every :math:`m` (asymptotically like
        :math:`1/m`, faster for small :math:`m`), the sense in which more augmentations
        approximate the loss better (the multiple-views claim of Ghosh, Agrawal et al.,
        arXiv:2312.10725, abstract).  The true marginal
        :math:`p` is used, and pairs of a view with itself are excluded: including them (the
        mean-of-views reading) adds a bias of order :math:`1/m`.

        Args:
            augmentations: ``(B, m)`` integer indices of augmented points, ``m >= 2``.
            images: ``None`` (rows are the graph's images in order, ``B = n``) or the
                ``(B,)`` sampled image indices (only their number is used).

        Returns:
            ``(M, M)`` symmetric estimate in the graph's dtype.

        Raises:
            ValueError: not a 2-D integer tensor, fewer than 2 views, indices out of range,
                or a row count that does not match.
        """
        fn = "AugmentationGraph.empirical_kernel"
        v.check_tensor(fn, "augmentations", augmentations, ndim=2, floating=False)
        if augmentations.dtype.is_floating_point or augmentations.dtype == torch.bool:
            raise ValueError(
                f"{fn}: augmentations must be integer indices, got {augmentations.dtype}"
            )
        rows, m = augmentations.shape
        if m < 2:
            raise ValueError(f"{fn}: need m >= 2 views per image to form pairs, got m = {m}")
        big_m = self.num_augmentations
        if rows and (int(augmentations.min()) < 0 or int(augmentations.max()) >= big_m):
            raise ValueError(f"{fn}: augmentations must be indices in [0, {big_m - 1}]")
        dtype = self.conditional.dtype
        if images is None:
            if rows != self.num_images:
                raise ValueError(
                    f"{fn}: with images=None, augmentations must have one row per image "
                    f"({self.num_images}), got {rows}"
                )
            omega = self.prior.to(dtype)
        else:
            v.check_labels(fn, images, rows, name="images")
            omega = torch.full((rows,), 1.0 / rows, dtype=dtype, device=augmentations.device)
        counts = torch.zeros(rows, big_m, dtype=dtype, device=augmentations.device)
        counts.scatter_add_(1, augmentations, torch.ones_like(augmentations, dtype=dtype))
        # sum over ordered pairs s != t = (all pairs) - (s = t pairs)
        pairs = counts.T @ (omega[:, None] * counts) - torch.diag(omega @ counts)
        joint = pairs / (m * (m - 1))
        return joint / torch.outer(self.marginal, self.marginal)


def _check_floating(fn: str, dtype: torch.dtype) -> None:
    if not dtype.is_floating_point:
        raise ValueError(f"{fn}: dtype must be a floating dtype, got {dtype}")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, dtype) -> Tensor:
    """Uniform draws in [1e-3, 1): bounded away from 0 so that powers cannot underflow to 0."""
    return torch.rand(shape, generator=generator, dtype=dtype).clamp_min(1e-3)


def random_augmentation_graph(
    num_images: int = 12,
    num_augmentations: int = 40,
    *,
    sparsity: float = 6.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> AugmentationGraph:
    r"""A random augmentation graph with sparse, overlapping augmentation distributions.

    :math:`p(x)` is a normalised vector of uniform draws; :math:`p(a \mid x) \propto
    u_{xa}^{s}` with :math:`u_{xa}` uniform and :math:`s` = ``sparsity``, so each image puts
    most of its mass on a few augmented points and different images overlap a little.  The
    defaults (12 images, 40 points, power 6, float64) are the setup of the kernel identities'
    tests and of ``proofs_checks/kernel_equivalence.py``.

    Args:
        num_images: :math:`n \ge 1`.
        num_augmentations: :math:`M \ge 1`.
        sparsity: exponent :math:`s > 0`; larger is sparser (1 is fairly uniform).
        generator: source of randomness.
        dtype: floating dtype of the graph.

    Returns:
        An :class:`AugmentationGraph` without labels.

    Raises:
        ValueError: sizes below 1, a non-positive ``sparsity``, or a non-floating dtype.

    Example:
        >>> import torch
        >>> graph = random_augmentation_graph(generator=torch.Generator().manual_seed(0))
        >>> graph.kernel.shape, round(float(graph.eigenpairs.values[0]), 12)
        (torch.Size([40, 40]), 1.0)
    """
    fn = "random_augmentation_graph"
    v.check_int(fn, "num_images", num_images, low=1)
    v.check_int(fn, "num_augmentations", num_augmentations, low=1)
    v.check_positive_float(fn, "sparsity", sparsity)
    _check_floating(fn, dtype)
    prior = _uniform((num_images,), generator, dtype)
    weights = _uniform((num_images, num_augmentations), generator, dtype) ** sparsity
    return AugmentationGraph(prior / prior.sum(), weights / weights.sum(dim=1, keepdim=True))


def clustered_augmentation_graph(
    num_classes: int = 4,
    images_per_class: int = 5,
    augmentations_per_image: int = 6,
    *,
    class_overlap: float = 0.3,
    background: float = 0.01,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> AugmentationGraph:
    r"""An augmentation graph with class structure: images of one class share augmentations.

    Each image owns ``augmentations_per_image`` points.  Its augmentation distribution puts
    weight 1 on its own points, ``class_overlap`` on the points of the other images of its
    class and ``background`` on every other point, each weight multiplied by a uniform draw
    in :math:`[0.5, 1.5)` and the row normalised; :math:`p(x)` is uniform.  With a strong
    class overlap the top eigenfunctions of :math:`T` after the constant are (close to)
    class indicators, so a linear probe on the top-:math:`d` features recovers ``labels``
    once :math:`d \ge` ``num_classes``; smaller overlaps make image identity compete with
    class identity (the "subsampling ansatz" figure in the appendix of Ghosh, Agrawal et
    al., arXiv:2312.10725).

    Args:
        num_classes: number of classes, >= 1.
        images_per_class: images per class, >= 1.
        augmentations_per_image: points owned by each image, >= 1.
        class_overlap: relative weight of same-class points, finite, >= 0.
        background: relative weight of all other points, finite, >= 0.
        generator: source of randomness.
        dtype: floating dtype of the graph.

    Returns:
        An :class:`AugmentationGraph` with ``labels`` (image ``i`` has class
        ``i // images_per_class``) and ``M = n * augmentations_per_image`` points.

    Raises:
        ValueError: sizes below 1, negative weights, or a non-floating dtype.
    """
    fn = "clustered_augmentation_graph"
    for name, value in (
        ("num_classes", num_classes),
        ("images_per_class", images_per_class),
        ("augmentations_per_image", augmentations_per_image),
    ):
        v.check_int(fn, name, value, low=1)
    v.check_positive_float(fn, "class_overlap", class_overlap, allow_zero=True)
    v.check_positive_float(fn, "background", background, allow_zero=True)
    _check_floating(fn, dtype)
    n = num_classes * images_per_class
    labels = torch.arange(n) // images_per_class
    owner = torch.arange(n * augmentations_per_image) // augmentations_per_image
    same_image = owner[None, :] == torch.arange(n)[:, None]
    same_class = labels[owner][None, :] == labels[:, None]
    base = torch.full((n, owner.numel()), background, dtype=dtype)
    base[same_class] = class_overlap
    base[same_image] = 1.0
    weights = base * (0.5 + torch.rand(base.shape, generator=generator, dtype=dtype))
    prior = torch.full((n,), 1.0 / n, dtype=dtype)
    return AugmentationGraph(prior, weights / weights.sum(dim=1, keepdim=True), labels)
