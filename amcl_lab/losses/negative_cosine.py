r"""The symmetric negative-cosine loss of BYOL (Grill et al. 2020) and SimSiam (Chen & He 2021).

Both methods predict one view's (target) projection from the other view's online prediction
and stop the gradient through the target; they differ in where the target comes from (an
exponential moving average of the online network in BYOL, the online network itself in
SimSiam) and in the constant and scale of the loss, which :func:`negative_cosine` exposes as
its ``convention`` argument.
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import _validation as v
from ._common import NORM_EPS, l2_normalize

__all__ = ["CONVENTIONS", "NegativeCosineLoss", "negative_cosine"]

#: Scale conventions of :func:`negative_cosine`: SimSiam's halved negative cosines, BYOL's
#: summed squared distances of the normalised vectors.
CONVENTIONS = ("simsiam", "byol")


def negative_cosine(
    p1: Tensor,
    p2: Tensor,
    z1: Tensor,
    z2: Tensor,
    *,
    convention: str = "simsiam",
    stop_gradient: bool = True,
    reduction: str = "mean",
    eps: float = NORM_EPS,
) -> Tensor:
    r"""Symmetric negative cosine between each view's prediction and the other view's target.

    With :math:`\cos(p, z) = \hat p^\top \hat z`, :math:`\hat x = x / \lVert x\rVert_2`, per
    sample :math:`i`:

    .. math::

        \ell_i^{\mathrm{simsiam}} = -\tfrac12 \cos(p_{1,i}, z_{2,i})
                                    - \tfrac12 \cos(p_{2,i}, z_{1,i}) \in [-1, 1],

    .. math::

        \ell_i^{\mathrm{byol}} = \lVert \hat p_{1,i} - \hat z_{2,i}\rVert_2^2
                                 + \lVert \hat p_{2,i} - \hat z_{1,i}\rVert_2^2
                               = 4 - 2\cos(p_{1,i}, z_{2,i}) - 2\cos(p_{2,i}, z_{1,i})
                               \in [0, 8],

    so :math:`\ell^{\mathrm{byol}} = 4 + 4\,\ell^{\mathrm{simsiam}}`.  ``p1``, ``p2`` are the
    predictor outputs :math:`p` of the two views and ``z1``, ``z2`` the targets :math:`z`
    (projections); the targets are detached (``stop_gradient``, the :math:`\mathrm{sg}` of
    both papers).  Implements Eqs. (2) and (4) of [Chen2021]_ (``convention="simsiam"``,
    :math:`\mathcal L = \frac12 \mathcal D(p_1, \mathrm{sg}(z_2)) + \frac12
    \mathcal D(p_2, \mathrm{sg}(z_1))`) and
    Eq. (2) of [Grill2020]_ symmetrised as :math:`\mathcal L + \tilde{\mathcal L}`
    (``convention="byol"``).  Both are minimal exactly when every prediction points along the
    other view's target (:math:`-1`, resp. :math:`0`) and maximal at antipodal ones.

    Args:
        p1: ``(N, D)`` predictions from the first view, N >= 1, D >= 1.
        p2: ``(N, D)`` predictions from the second view.
        z1: ``(N, D)`` targets (projections) of the first view; predicted by ``p2``.
        z2: ``(N, D)`` targets of the second view; predicted by ``p1``.
        convention: ``"simsiam"`` (halved negative cosines, range [-1, 1]) or ``"byol"``
            (summed :math:`2 - 2\cos`, range [0, 8]).
        stop_gradient: detach ``z1`` and ``z2``.  ``False`` gives the full derivative (same
            value), for gradient checks or callers who detach the targets themselves.
        reduction: ``"mean"`` over the N samples, ``"sum"`` or ``"none"``.
        eps: floor on the row norm; a zero row has cosine 0 with everything (so the BYOL
            form, computed as :math:`2 - 2\cos`, gives it 2 per direction).

    Returns:
        A scalar, or the ``(N,)`` per-sample losses for ``reduction="none"``; float16/bfloat16
        inputs are computed, and returned, in float32.

    Raises:
        ValueError: inputs of different shapes or devices, not 2-D, empty, NaN/inf, an
            unknown ``convention`` or ``reduction``, or a non-positive ``eps``.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> float(negative_cosine(z, z, z, z))  # aligned: the minimum
        -1.0
        >>> float(negative_cosine(z, z, z, z, convention="byol"))
        0.0
        >>> g = torch.Generator().manual_seed(0)
        >>> p1, p2, z1, z2 = torch.randn(4, 8, 16, generator=g, dtype=torch.float64)
        >>> round(float(negative_cosine(p1, p2, z1, z2)), 6)
        -0.045993

    References:
        .. [Grill2020] J.-B. Grill, F. Strub, F. Altché, C. Tallec, P. H. Richemond, E.
           Buchatskaya, C. Doersch, B. A. Pires, Z. D. Guo, M. G. Azar, B. Piot, K.
           Kavukcuoglu, R. Munos, M. Valko, "Bootstrap Your Own Latent: A New Approach to
           Self-Supervised Learning", NeurIPS 2020, arXiv:2006.07733.
        .. [Chen2021] X. Chen, K. He, "Exploring Simple Siamese Representation Learning",
           CVPR 2021, arXiv:2011.10566.

    .. note:: Documented choice.
        The default is SimSiam's scale, :math:`\ell \in [-1, 1]` (lightly's
        ``NegativeCosineSimilarity`` applied as ``0.5 * (loss(p1, z2) + loss(p2, z1))``);
        ``convention="byol"`` is BYOL's :math:`\mathcal L + \tilde{\mathcal L}`, each
        direction :math:`2 - 2\cos \in [0, 4]`, summed to :math:`[0, 8]`.  Summing the two
        negative cosines without the :math:`\frac12` gives :math:`[-2, 2]`, twice the
        default.  The conventions differ by the constant 4 and the factor 4, so a learning
        rate tuned for one is off by 4x for the other.
    """
    fn = "negative_cosine"
    tensors = (("p1", p1), ("p2", p2), ("z1", z1), ("z2", z2))
    for name, t in tensors:
        v.check_tensor(fn, name, t, ndim=2, min_rows=1)
    for name, t in tensors[1:]:
        v.check_same_shape(fn, "p1", p1, name, t)
    v.check_same_device(fn, tensors)
    v.check_choice(fn, "convention", convention, CONVENTIONS)
    v.check_reduction(fn, reduction)
    v.check_positive_float(fn, "eps", eps)
    v.check_bool(fn, "stop_gradient", stop_gradient)
    if stop_gradient:
        z1, z2 = z1.detach(), z2.detach()
    dtype = v.compute_dtype(p1, p2, z1, z2)
    a1, a2, t1, t2 = (l2_normalize(t.to(dtype), eps) for t in (p1, p2, z1, z2))
    cos12 = (a1 * t2).sum(dim=1)
    cos21 = (a2 * t1).sum(dim=1)
    if convention == "simsiam":
        losses = -0.5 * (cos12 + cos21)
    else:  # BYOL Eq. (2): |p - z|^2 of unit vectors = 2 - 2 cos, both directions summed
        losses = (2.0 - 2.0 * cos12) + (2.0 - 2.0 * cos21)
    return v.reduce(losses, reduction)


class NegativeCosineLoss(nn.Module):
    """Module form of :func:`negative_cosine`; ``forward(p1, p2, z1, z2)``."""

    def __init__(self, *, convention: str = "simsiam", reduction: str = "mean") -> None:
        super().__init__()
        self.convention, self.reduction = convention, reduction

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        return negative_cosine(p1, p2, z1, z2, convention=self.convention, reduction=self.reduction)
