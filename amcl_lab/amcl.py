r"""AMCL modules: the multi-head projector, the shared pair-temperature network and a model
wrapper that turns views into an AMCL (or baseline) loss.

The losses themselves are the pure functions of :mod:`amcl_lab.losses.amcl`; the modules
here only produce their inputs: head stacks ``(C, N, D)`` and per-pair temperatures.
Source: L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head Contrastive
Learning", ECCV 2024, arXiv:2310.05615: the heads and the shared temperature network of its
model-comparison figure, the losses of its Table 2 and the temperature bounds of its
Eq. (3); where the paper leaves details open, the second official code release
(``LeiWangR/cl``, ``amcl/losses.py`` and ``amcl/models.py``).  The choices are listed in the
README, "AMCL: documented choices".
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from . import _validation as v
from . import distributed
from .losses import amcl_barlow_twins, amcl_info_nce, amcl_nt_xent, amcl_simsiam, nt_xent
from .losses._common import NORM_EPS, l2_normalize

__all__ = [
    "AMCL_LOSSES",
    "AMCLModel",
    "LearnedTemperature",
    "MultiHeadProjector",
    "PairTemperature",
    "ScalarTemperature",
]


class MultiHeadProjector(nn.Module):
    r"""C projection heads of identical architecture and independent weights.

    Head :math:`c` is :math:`g_c(h) = W^c_2\,\mathrm{ReLU}(W^c_1 h + b^c_1) + b^c_2`
    (Linear-ReLU-Linear, 512 -> 512 -> 128 in the official code), each initialised
    independently by PyTorch's default ``nn.Linear`` scheme.  The heads are the
    :math:`g_c` of [Wang2024]_ (Section 3, Fig. "comparison" (c)); the loss sums over them.

    Args:
        in_dim: encoder feature width, >= 1.
        hidden_dim: hidden width of each head, >= 1.
        out_dim: projection width :math:`d'`, >= 1.
        heads: number of heads C, >= 1 (the paper uses 3).

    Shapes:
        ``forward(x)`` takes encoder features ``(N, in_dim)``, shared by every head, or a
        stack ``(C, N, in_dim)`` with one input per head (e.g. a per-head SimSiam
        predictor), and returns the head stack ``(C, N, out_dim)``.

    Raises:
        ValueError: a non-positive size; at call time a wrong feature width or a stack whose
            head count differs from ``heads``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> projector = MultiHeadProjector(16, 32, 8, heads=3)
        >>> projector(torch.randn(5, 16)).shape
        torch.Size([3, 5, 8])

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, heads: int = 3) -> None:
        super().__init__()
        fn = "MultiHeadProjector"
        for name, value in (
            ("in_dim", in_dim),
            ("hidden_dim", hidden_dim),
            ("out_dim", out_dim),
            ("heads", heads),
        ):
            v.check_int(fn, name, value, low=1)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
            for _ in range(heads)
        )

    @property
    def num_heads(self) -> int:
        """The number of heads C."""
        return len(self.heads)

    def forward(self, x: Tensor) -> Tensor:
        fn = "MultiHeadProjector"
        v.check_tensor(fn, "x", x, finite=False)
        if x.ndim not in (2, 3) or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"{fn}: x must be (N, {self.in_dim}) features or a (C, N, {self.in_dim}) stack, "
                f"got shape {tuple(x.shape)}"
            )
        if x.ndim == 2:
            return torch.stack([head(x) for head in self.heads])
        if x.shape[0] != self.num_heads:
            raise ValueError(
                f"{fn}: x is a stack of {x.shape[0]} heads but the projector has "
                f"{self.num_heads}; pass (N, {self.in_dim}) features or one input per head"
            )
        return torch.stack([head(part) for head, part in zip(self.heads, x, strict=True)])


class LearnedTemperature(nn.Module):
    r"""A temperature source with parameters: what :class:`AMCLModel` and the engine train.

    Subclasses map pairs of vectors to temperatures in :math:`(\tau_{\min}, \tau_{\max})`
    through :meth:`from_score`; :meth:`pairwise` and :meth:`with_queue` give the layouts the
    AMCL losses take.  :class:`PairTemperature` is AMCL's network; :class:`ScalarTemperature`,
    one learned temperature for every pair, is the control that separates "a learned
    temperature level" from "a temperature per pair".
    """

    tau_min: float
    tau_max: float

    def _check_bounds(self, fn: str, tau_min: float, tau_max: float) -> None:
        v.check_positive_float(fn, "tau_min", tau_min)
        v.check_positive_float(fn, "tau_max", tau_max)
        if tau_min >= tau_max:
            raise ValueError(
                f"{fn}: tau_min must be < tau_max, got tau_min={tau_min!r}, tau_max={tau_max!r}"
            )
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)

    def from_score(self, score: Tensor) -> Tensor:
        r"""The squash :math:`\tau_{\min} + (\tau_{\max} - \tau_{\min})\,\mathrm{sigmoid}(-r)`."""
        score = score.to(torch.promote_types(score.dtype, torch.float32))
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(-score)

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """Temperatures of every row pair: ``(..., M, D)``, ``(..., K, D)`` -> ``(..., M, K)``."""
        raise NotImplementedError

    def with_queue(self, query: Tensor, key: Tensor, queue: Tensor) -> Tensor:
        """MoCo's temperature layout: ``(C, N, D)`` queries, keys and a ``(C, K, D)`` queue ->
        ``(C, N, 1 + K)``, column 0 the pair ``(query[c, i], key[c, i])``, column ``j >= 1``
        the pair with queue row ``j - 1`` (what :func:`~amcl_lab.losses.amcl_moco` takes).

        Example:
            >>> import torch
            >>> _ = torch.manual_seed(0)
            >>> q, k = torch.randn(2, 3, 4, 8)
            >>> PairTemperature(8, hidden=16).with_queue(q, k, torch.randn(3, 10, 8)).shape
            torch.Size([3, 4, 11])
        """
        return torch.cat([self(query, key).unsqueeze(-1), self.pairwise(query, queue)], dim=-1)


class ScalarTemperature(LearnedTemperature):
    r"""One learned temperature for every pair: :math:`\tau = \tau_{\min} + (\tau_{\max} -
    \tau_{\min})\,\mathrm{sigmoid}(-\theta)` with a single parameter :math:`\theta`.

    The control of the AMCL experiment that learns the temperature *level* with the AMCL
    objective (the regulariser :math:`\Omega` included) but gives every pair the same value,
    so that a gain of :class:`PairTemperature` over it is due to pair-adaptivity.  It takes
    the same inputs and returns the same shapes as :class:`PairTemperature`.

    Args:
        init: the starting temperature, in ``(tau_min, tau_max)``.
        tau_min, tau_max: the bounds, ``0 < tau_min < tau_max``.

    Example:
        >>> import torch
        >>> temperature = ScalarTemperature(0.5)
        >>> a, b = torch.randn(2, 5, 8)
        >>> [round(float(t), 6) for t in temperature(a, b)[:2]]
        [0.5, 0.5]
        >>> temperature.pairwise(a, b).shape
        torch.Size([5, 5])
    """

    def __init__(self, init: float, tau_min: float = 1e-5, tau_max: float = 2.0) -> None:
        super().__init__()
        fn = "ScalarTemperature"
        self._check_bounds(fn, tau_min, tau_max)
        v.check_positive_float(fn, "init", init)
        if not tau_min < init < tau_max:
            raise ValueError(f"{fn}: init must be in (tau_min, tau_max), got {init!r}")
        share = (init - tau_min) / (tau_max - tau_min)  # sigmoid(-theta) = share
        self.theta = nn.Parameter(torch.tensor(math.log((1.0 - share) / share)))

    @property
    def value(self) -> Tensor:
        """The current temperature (0-d)."""
        return self.from_score(self.theta)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """The temperature of the pairs ``(a[i], b[i])``: ``(..., D)`` inputs -> ``(...)``."""
        shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
        return self.value.to(a.device).expand(shape)

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """``(..., M, D)``, ``(..., K, D)`` -> ``(..., M, K)``, every entry the temperature."""
        return self.value.to(a.device).expand(*a.shape[:-1], b.shape[-2])


class PairTemperature(LearnedTemperature):
    r"""The pair-adaptive temperature network shared by all heads and all loss terms.

    .. math::

        T(a, b) = \tau_{\min} + (\tau_{\max} - \tau_{\min})\,
                  \mathrm{sigmoid}\big(-\langle\phi(\bar a), \phi(\bar b)\rangle\big),
        \qquad \bar a = a / \lVert a\rVert,

    with :math:`\phi` = Linear(``dim``, ``hidden``) -> ReLU -> Linear(``hidden``, ``dim``).
    :math:`\eta = \tau_{\min}` and :math:`\iota = \tau_{\max} - \tau_{\min}` are the bounds of
    Eq. (3) of [Wang2024]_ (the second code release's ``TemperatureHead``).

    Properties: :math:`T` lies in :math:`(\tau_{\min}, \tau_{\max})` and decreases in
    the score :math:`r = \langle\phi(\bar a), \phi(\bar b)\rangle` (a larger score gives a
    smaller temperature), equals the midpoint at :math:`r = 0`, is symmetric in
    :math:`(a, b)` and invariant to positive rescaling of either vector.  In floating point
    the sigmoid saturates, so :math:`T` rounds to a bound once :math:`|r|` exceeds about 16
    (float32) or 36 (float64); it never leaves :math:`[\tau_{\min}, \tau_{\max}]`.

    Args:
        dim: dimension of the compared vectors (:math:`d'`; the batch size N for Barlow
            Twins channel vectors), >= 1.
        hidden: hidden width of :math:`\phi`, >= 1 (128 in the second release).
        tau_min: lower bound :math:`\eta > 0` (default 1e-5).
        tau_max: upper bound, > ``tau_min`` (default 2).
        eps: floor on the norm used to normalise the inputs.

    Raises:
        ValueError: bad sizes or bounds; at call time an input whose last dimension is not
            ``dim``, mismatched head counts in :meth:`pairwise`, or half-precision parameters.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> temperature = PairTemperature(8, hidden=16)
        >>> a, b = torch.randn(2, 5, 8)
        >>> tau = temperature(a, b)  # one temperature per pair (a[i], b[i])
        >>> tau.shape, bool(((tau > 1e-5) & (tau < 2.0)).all())
        (torch.Size([5]), True)
        >>> torch.allclose(tau, temperature(3.0 * b, a))  # symmetric, scale-invariant
        True
        >>> temperature.pairwise(a, b).shape  # every pair (a[i], b[j])
        torch.Size([5, 5])

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.

    .. note:: Documented choice.
        One :math:`\phi` shared by every head, an inner-product score and the inverse
        sigmoid direction follow the second code release and the paper's Eq. (3); the first
        release used one MLP per head on the concatenated pair with a positive sigmoid,
        which is neither symmetric nor scale-invariant.  Scores are squashed in at least
        float32 because :math:`1/\tau` reaches :math:`1/\tau_{\min} = 10^5`.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        tau_min: float = 1e-5,
        tau_max: float = 2.0,
        *,
        eps: float = NORM_EPS,
    ) -> None:
        super().__init__()
        fn = "PairTemperature"
        v.check_int(fn, "dim", dim, low=1)
        v.check_int(fn, "hidden", hidden, low=1)
        self._check_bounds(fn, tau_min, tau_max)
        v.check_positive_float(fn, "eps", eps)
        self.dim, self.eps = dim, eps
        self.phi = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def embed(self, x: Tensor, name: str = "x") -> Tensor:
        r""":math:`\phi(x / \lVert x\rVert)` for ``(..., dim)`` inputs, in the parameters' dtype."""
        fn = "PairTemperature"
        v.check_tensor(fn, name, x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{fn}: {name} must have feature dimension {self.dim} (the dim the network was "
                f"built with; for Barlow Twins channel vectors, the batch size), "
                f"got shape {tuple(x.shape)}"
            )
        weight = self.phi[0].weight
        if weight.dtype in v.LOW_PRECISION:
            raise ValueError(
                f"{fn}: parameters are {weight.dtype}; keep the temperature network in float32 "
                f"or float64 (1/tau reaches {1 / self.tau_min:.3g})"
            )
        return self.phi(l2_normalize(x.to(weight.dtype), self.eps))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Temperatures of the pairs ``(a[i], b[i])``: ``(..., dim)`` inputs -> ``(...)``."""
        return self.from_score((self.embed(a, "a") * self.embed(b, "b")).sum(dim=-1))

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """Temperatures of every row pair: ``(..., M, dim)``, ``(..., K, dim)`` -> ``(..., M, K)``.

        ``phi`` runs once per row, so the ``M x K`` matrix costs one matrix product; leading
        (head) dimensions must agree.
        """
        if a.ndim < 2 or b.ndim < 2 or a.shape[:-2] != b.shape[:-2]:
            raise ValueError(
                f"PairTemperature: pairwise needs a (..., M, {self.dim}) and b (..., K, "
                f"{self.dim}) with the same leading (head) dimensions, got shapes "
                f"{tuple(a.shape)} and {tuple(b.shape)}"
            )
        return self.from_score(self.embed(a, "a") @ self.embed(b, "b").transpose(-1, -2))


#: Losses :class:`AMCLModel` can build, with the function each one calls.
AMCL_LOSSES: dict[str, Callable[..., Tensor]] = {
    "amcl_nt_xent": amcl_nt_xent,
    "amcl_info_nce": amcl_info_nce,
    "amcl_barlow_twins": amcl_barlow_twins,
    "amcl_simsiam": amcl_simsiam,
    "nt_xent": nt_xent,
}


class AMCLModel(nn.Module):
    r"""Encoder + multi-head projector + temperature source, turning views into one loss.

    Each view ``x`` becomes a head stack ``z = projector(encoder(x))`` of shape
    ``(C, N, D)``; for every pair of views the chosen loss is evaluated, and the mean over
    the :math:`\binom{V}{2}` view pairs is returned.  Per loss:

    * ``"amcl_nt_xent"`` / ``"amcl_info_nce"``: Eq. (2.1) / (2.4) on the two stacks, with
      temperatures ``temperature.pairwise`` of the stacked rows ``[z_a; z_b]`` of each head;
    * ``"amcl_barlow_twins"``: Eq. (2.3), temperatures of the channel vectors
      ``z[c, :, l]`` (the temperature network must be built with ``dim = N``, the batch size);
    * ``"amcl_simsiam"``: Eq. (2.2) with ``p = predictor(z)`` and temperatures of
      ``(p_a, z_b)`` and ``(p_b, z_a)`` computed on the detached targets;
    * ``"nt_xent"``: the baseline Eq. (1.1)/(1.4), :func:`~amcl_lab.losses.nt_xent` with a
      constant temperature, summed over heads.

    Data parallelism (``gather_distributed=True`` under a process group of W ranks,
    conventions in :mod:`amcl_lab.distributed`): each view is this rank's shard of n samples
    of a global batch of N = W n, and the loss is that of the global batch on every rank.
    The flag is passed to the loss, and a learned temperature is computed on the rows the
    loss compares, gathered with :func:`~amcl_lab.distributed.gather` (gradients flow back
    to each rank's shard):

    * ``"amcl_nt_xent"`` / ``"amcl_info_nce"``: the 2n local anchors ``[z_a; z_b]`` against
      the 2N gathered candidates ``[Z_a; Z_b]`` (ranks in order), the ``(C, 2n, 2N)``
      layout these losses take.  Each rank computes the temperatures of its own anchors
      only, so a rank's temperature-network gradient is W times its anchors' share and the
      mean over ranks (DDP's average) is the single-process gradient;
    * ``"amcl_barlow_twins"``: the loss is a statistic of the whole batch, computed on every
      rank from the gathered stacks, so the temperatures are those of the gathered channel
      vectors ``Z[c, :, l]`` (the network is built with ``dim = N``, the global batch size)
      and every rank holds the whole, single-process, temperature-network gradient;
    * ``"amcl_simsiam"``: per-sample terms; the flag changes nothing (the mean of the
      ranks' local means is the global mean);
    * ``"nt_xent"``: the flag is passed to :func:`~amcl_lab.losses.nt_xent`.

    The temperatures' gather is one extra all-gather of the head stacks per view pair, on
    top of the loss's own.

    The single-head constant-temperature baseline is
    ``AMCLModel(enc, MultiHeadProjector(512, 512, 128, heads=1), 0.5, loss="nt_xent")`` and
    AMCL is ``AMCLModel(enc, MultiHeadProjector(512, 512, 128), PairTemperature(128))``, the
    panels (a) and (c) of the paper's model comparison.  Implements the training objective of
    [Wang2024]_ (Table 2).

    Args:
        encoder: maps a view ``(N, ...)`` to features ``(N, F)``.
        projector: maps ``(N, F)`` to a head stack ``(C, N, D)``, e.g.
            :class:`MultiHeadProjector`.
        temperature: a :class:`LearnedTemperature` (adaptive: :class:`PairTemperature`, or
            the :class:`ScalarTemperature` control) or a positive float (constant).
        loss: a name from :data:`AMCL_LOSSES` (default ``"amcl_nt_xent"``).
        predictor: a module mapping a head stack ``(C, N, D)`` to ``(C, N, D)``, e.g.
            ``MultiHeadProjector(D, 512, D, heads=C)``; required by ``"amcl_simsiam"`` only.
        gather_distributed: under an initialised process group, score the local anchors
            against the candidates of every rank (see above); no effect without one.
        **loss_kwargs: keyword arguments of the loss (``beta``, ``mode``, ``k``,
            ``neg_regularizer``, ``lambda_offdiag``, ``decoupled``, ...).

    Raises:
        ValueError: an unknown loss or loss keyword, ``"nt_xent"`` with an adaptive
            temperature, a missing or unexpected predictor, a non-positive constant
            temperature, a non-bool ``gather_distributed``; at call time fewer than two
            views, a projector that does not return a 3-D stack, (Barlow Twins) a batch size
            (global when gathered) other than the temperature network's, or (gathered, on
            every rank) shards of different sizes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model = AMCLModel(nn.Linear(10, 16), MultiHeadProjector(16, 32, 8), PairTemperature(8))
        >>> x = torch.randn(6, 10)
        >>> loss = model(x + 0.1 * torch.randn(6, 10), x + 0.1 * torch.randn(6, 10))
        >>> loss.shape, bool(torch.isfinite(loss))
        (torch.Size([]), True)

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.

    .. note:: Documented choice.
        Views go through the encoder one at a time (BatchNorm statistics per view, as
        lightly and the second release do); with more than two views the loss is the mean
        over all view pairs.  MoCo needs a momentum encoder and a queue, which belong to a
        training loop: call :func:`~amcl_lab.losses.amcl_moco` there with the temperatures
        of :meth:`PairTemperature.with_queue` (the engine's ``loss="amcl_moco"`` does).  The
        Barlow Twins channel vectors are normalised by the temperature network like any
        input (the second release feeds them raw).
    """

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        temperature: LearnedTemperature | float,
        loss: str = "amcl_nt_xent",
        *,
        predictor: nn.Module | None = None,
        gather_distributed: bool = False,
        **loss_kwargs: Any,
    ) -> None:
        super().__init__()
        fn = "AMCLModel"
        v.check_choice(fn, "loss", loss, tuple(AMCL_LOSSES))
        adaptive = isinstance(temperature, LearnedTemperature)
        if not adaptive:
            v.check_temperature(fn, temperature)
        if loss == "nt_xent" and adaptive:
            raise ValueError(
                f"{fn}: the baseline loss 'nt_xent' needs a constant temperature (a float), "
                "got a learned temperature; use loss='amcl_nt_xent' for adaptive temperatures"
            )
        if (predictor is None) == (loss == "amcl_simsiam"):
            need = "needs" if loss == "amcl_simsiam" else "takes no"
            raise ValueError(f"{fn}: loss={loss!r} {need} predictor, got {predictor!r}")
        if not isinstance(gather_distributed, bool):
            raise ValueError(f"{fn}: gather_distributed must be a bool, got {gather_distributed!r}")
        clash = sorted({"temperature", "reduction"} & set(loss_kwargs))
        if clash:
            raise ValueError(f"{fn}: {clash} are set by the model, not passed as loss keywords")
        try:
            inspect.signature(AMCL_LOSSES[loss]).bind_partial(**loss_kwargs)
        except TypeError as error:
            raise ValueError(f"{fn}: bad keyword arguments for loss={loss!r}: {error}") from None
        self.encoder, self.projector, self.predictor = encoder, projector, predictor
        self.temperature = temperature
        self.loss, self.loss_kwargs = loss, loss_kwargs
        self.gather_distributed = gather_distributed
        # the per-sample amcl_simsiam takes no gather_distributed
        if "gather_distributed" in inspect.signature(AMCL_LOSSES[loss]).parameters:
            self._call_kwargs = {**loss_kwargs, "gather_distributed": gather_distributed}
        else:
            self._call_kwargs = loss_kwargs

    def head_stack(self, x: Tensor) -> Tensor:
        """The head stack ``(C, N, D)`` of one view."""
        z = self.projector(self.encoder(x))
        if not isinstance(z, Tensor) or z.ndim != 3:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"AMCLModel: the projector must return a (C, N, D) head stack, got {shape}"
            )
        return z

    def forward(self, *views: Tensor) -> Tensor:
        """The loss averaged over every pair of views (two or more ``(N, ...)`` batches)."""
        if len(views) < 2:
            raise ValueError(f"AMCLModel: needs at least two views, got {len(views)}")
        stacks = [self.head_stack(x) for x in views]
        pairs = list(itertools.combinations(stacks, 2))
        return sum(self._pair_loss(a, b) for a, b in pairs) / len(pairs)

    def _global_rows(self, z: Tensor, dim: int) -> Tensor:
        """``z`` with the rows of every rank along ``dim`` (ranks in order) when gathering.

        :func:`amcl_lab.distributed.gather`: the other ranks' gradients with respect to these
        rows flow back to this rank's shard.  ``z`` itself without gathering.
        """
        if self.gather_distributed and distributed.is_active():
            return distributed.gather(z, dim=dim, fn="AMCLModel", name="the head stacks")
        return z

    def _pair_loss(self, za: Tensor, zb: Tensor) -> Tensor:
        fn, kw, temperature = AMCL_LOSSES[self.loss], self._call_kwargs, self.temperature
        if not isinstance(temperature, LearnedTemperature):
            if self.loss == "nt_xent":
                return sum(nt_xent(a, b, temperature, **kw) for a, b in zip(za, zb, strict=True))
            if self.loss == "amcl_simsiam":
                return fn(self.predictor(za), self.predictor(zb), za, zb, temperature, **kw)
            return fn(za, zb, temperature, **kw)
        if self.loss in ("amcl_nt_xent", "amcl_info_nce"):
            # anchors [z_a; z_b] x candidates [Z_a; Z_b] of every rank: (C, 2n, 2N)
            anchors = torch.cat([za, zb], dim=1)
            views = self._global_rows(anchors.unflatten(1, (2, -1)), dim=2)
            return fn(za, zb, temperature.pairwise(anchors, views.flatten(1, 2)), **kw)
        if self.loss == "amcl_barlow_twins":
            # the channel vectors of the batch the loss correlates (global when gathered)
            ga, gb = self._global_rows(torch.stack([za, zb]), dim=2).unbind(0)
            if isinstance(temperature, PairTemperature) and ga.shape[1] != temperature.dim:
                raise ValueError(
                    f"AMCLModel: amcl_barlow_twins compares channel vectors of the batch, and "
                    f"the temperature network was built for batch size {temperature.dim}; got "
                    f"a batch of {ga.shape[1]} (the global batch when gathered; keep the batch "
                    "size fixed, e.g. drop_last=True)"
                )
            tau = temperature.pairwise(ga.transpose(1, 2), gb.transpose(1, 2))
            return fn(za, zb, tau, **kw)
        # amcl_simsiam: temperatures on (prediction, detached target) pairs
        pa, pb = self.predictor(za), self.predictor(zb)
        tau = torch.stack([temperature(pa, zb.detach()), temperature(pb, za.detach())], 1)
        return fn(pa, pb, za, zb, tau, **kw)
