r"""DINO's self-distillation loss and its centre update (Caron et al., ICCV 2021).

:func:`dino` is the cross-entropy between the centred, sharpened teacher distribution of one
crop and the student distribution of every other crop; :func:`dino_center_update` is the
exponential moving average of the teacher outputs that the centre follows.  Both are pure
functions; :class:`DINOLoss` keeps the centre as a buffer and updates it after each call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _validation as v
from .. import distributed

__all__ = ["DINOLoss", "dino", "dino_center_update"]


def _check_center(fn: str, center: object, k: int, tensors: list) -> None:
    v.check_tensor(fn, "center", center, ndim=1)
    if center.shape[0] != k:  # type: ignore[union-attr]
        raise ValueError(
            f"{fn}: center must have shape ({k},) (one entry per output dimension K), got "
            f"{tuple(center.shape)}"  # type: ignore[union-attr]
        )
    tensors.append(("center", center))


def dino(
    student: Tensor,
    teacher: Tensor,
    center: Tensor | None = None,
    *,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    stop_gradient: bool = True,
) -> Tensor:
    r"""DINO loss: every student crop predicts the centred, sharpened teacher of another crop.

    With student outputs :math:`s_{i,v} \in \mathbb R^K` of crops :math:`v = 1..V_s` and
    teacher outputs :math:`t_{i,u}` of the first :math:`V_t` crops (the global crops, which
    the student also sees as its first :math:`V_t` views):

    .. math::

        P_t(i, u) = \mathrm{softmax}\Big(\frac{t_{i,u} - c}{\tau_t}\Big),\qquad
        P_s(i, v) = \mathrm{softmax}\Big(\frac{s_{i,v}}{\tau_s}\Big),

    .. math::

        L = \frac{1}{|\mathcal P|} \sum_{(u, v) \in \mathcal P} \frac1N \sum_{i=1}^N
            -\sum_{k=1}^K P_t(i, u)_k \log P_s(i, v)_k,
        \qquad \mathcal P = \{(u, v) : u \le V_t,\ v \le V_s,\ v \ne u\}

    (``center`` :math:`c`, ``teacher_temperature`` :math:`\tau_t`, ``student_temperature``
    :math:`\tau_s`; same-crop pairs are skipped).  Implements Eqs. (1)-(3) of [Caron2021]_
    (the tempered softmaxes, their cross-entropy and the multi-crop sum over pairs of
    different crops) with the teacher centring and sharpening of its Section 3.1
    (:math:`\tau_t < \tau_s` sharpens), averaged over the pairs as the official code does.
    With :math:`\tau_t = \tau_s` and :math:`c = 0` it is a cross-entropy between softmaxes,
    at least the teacher's entropy and equal to it exactly when each student distribution
    equals its teacher's.

    Args:
        student: ``(N, V_s, K)`` student outputs (logits) of ``V_s >= 2`` crops, N >= 1.
        teacher: ``(N, V_t, K)`` teacher outputs of the first ``V_t`` crops,
            ``1 <= V_t <= V_s``.
        center: ``(K,)`` centre :math:`c` (:func:`dino_center_update`), or ``None`` for 0.
        student_temperature: :math:`\tau_s > 0` (0.1 in the paper).
        teacher_temperature: :math:`\tau_t > 0` (0.04 after the paper's warm-up from 0.04 to
            at most 0.07; the schedule is the training loop's).
        stop_gradient: detach the teacher outputs and the centre (the teacher is an EMA of
            the student, trained by no gradient).  ``False`` gives the full derivative (same
            value), for gradient checks.

    Returns:
        A scalar in the compute dtype (float32 for half inputs).

    Raises:
        ValueError: inputs not 3-D, mismatched N or K, ``V_t > V_s``, fewer than two student
            crops, a centre of the wrong shape, NaN/inf values, or a non-positive
            temperature.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> teacher = torch.randn(4, 2, 6, generator=g, dtype=torch.float64)
        >>> student = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)  # 2 global + 3
        >>> round(float(dino(student, teacher)), 6)
        9.754357
        >>> same = teacher[:, :1].expand(4, 2, 6)  # one distribution per image
        >>> ce = dino(same, same, student_temperature=1.0, teacher_temperature=1.0)
        >>> p = torch.softmax(teacher[:, 0], dim=-1)
        >>> bool(torch.isclose(ce, -(p * p.log()).sum(-1).mean()))  # = the entropy
        True

    References:
        .. [Caron2021] M. Caron, H. Touvron, I. Misra, H. Jégou, J. Mairal, P. Bojanowski,
           A. Joulin, "Emerging Properties in Self-Supervised Vision Transformers", ICCV
           2021, arXiv:2104.14294.

    .. note:: Documented choice.
        Each (teacher crop, other student crop) pair counts once and the mean runs over the
        pairs, as the official code (``facebookresearch/dino``, ``DINOLoss``) and lightly's
        ``DINOLoss`` do; the paper's Eq. (3) writes the sum over the pairs.  The centre is an
        argument, not state: the caller applies :func:`dino_center_update` after the step
        (lightly's ``DINOLoss`` updates its buffer inside ``forward``; so does
        :class:`DINOLoss` here).
    """
    fn = "dino"
    v.check_tensor(fn, "student", student, ndim=3)
    v.check_tensor(fn, "teacher", teacher, ndim=3)
    n, crops, k = student.shape
    if n < 1 or crops < 2:
        raise ValueError(
            f"{fn}: student must have shape (N, V_s, K) with N >= 1 and V_s >= 2 crops (the "
            f"same-crop pair is skipped), got {tuple(student.shape)}"
        )
    if teacher.shape[0] != n or teacher.shape[2] != k:
        raise ValueError(
            f"{fn}: teacher must have shape (N, V_t, K) = ({n}, V_t, {k}) like student, got "
            f"{tuple(teacher.shape)}"
        )
    if not 1 <= teacher.shape[1] <= crops:
        raise ValueError(
            f"{fn}: teacher must hold 1 <= V_t <= V_s = {crops} crops (the first V_t student "
            f"crops), got {teacher.shape[1]}"
        )
    tensors = [("student", student), ("teacher", teacher)]
    if center is not None:
        _check_center(fn, center, k, tensors)
    v.check_same_device(fn, tensors)
    student_temperature = v.check_temperature(fn, student_temperature, "student_temperature")
    teacher_temperature = v.check_temperature(fn, teacher_temperature, "teacher_temperature")
    v.check_bool(fn, "stop_gradient", stop_gradient)
    dtype = v.compute_dtype(*(t for _, t in tensors))
    t = teacher.to(dtype)
    if center is not None:
        t = t - center.to(dtype)
    if stop_gradient:
        t = t.detach()
    target = torch.softmax(t / teacher_temperature, dim=-1)  # (N, V_t, K)
    log_student = torch.log_softmax(student.to(dtype) / student_temperature, dim=-1)
    # cross[u, v] = mean_i -sum_k P_t(i, u)_k log P_s(i, v)_k
    cross = -torch.einsum("nuk,nvk->uv", target, log_student) / n
    teacher_crops = teacher.shape[1]
    keep = torch.ones_like(cross, dtype=torch.bool)
    keep[torch.arange(teacher_crops), torch.arange(teacher_crops)] = False  # same crop
    return v.check_finite_result(fn, cross[keep].mean(), "student, teacher and center")


@torch.no_grad()
def dino_center_update(
    center: Tensor,
    teacher: Tensor,
    momentum: float = 0.9,
    *,
    gather_distributed: bool = False,
) -> Tensor:
    r"""DINO's centre after one step: :math:`c \leftarrow m\,c + (1 - m)\,\bar t`.

    :math:`\bar t = \frac{1}{N V_t}\sum_{i, u} t_{i,u}` is the mean teacher output of the
    batch over every teacher crop (``momentum`` :math:`m`).  Implements Eq. (4) of
    [Caron2021]_ (the batch mean over the teacher's crops, as the official code's
    ``update_center``).  Computed without gradient; the inputs are not modified.

    Args:
        center: ``(K,)`` current centre.
        teacher: ``(N, V_t, K)`` teacher outputs of the step (before centring), N, V_t >= 1.
        momentum: :math:`m \in [0, 1]` (0.9 in the paper); ``1`` keeps the centre fixed.
        gather_distributed: under an initialised process group, :math:`\bar t` is the mean
            over the global batch (the local sums all-reduced, as the official code does), so
            every rank gets the same centre.  No effect without a process group.

    Returns:
        The new ``(K,)`` centre in the compute dtype (float32 for half inputs).

    Raises:
        ValueError: wrong shapes, NaN/inf values, or ``momentum`` outside [0, 1].

    Example:
        >>> import torch
        >>> teacher = torch.tensor([[[1.0, 3.0], [3.0, 5.0]]], dtype=torch.float64)  # N=1
        >>> dino_center_update(torch.zeros(2, dtype=torch.float64), teacher, 0.5).tolist()
        [1.0, 2.0]

    References:
        .. [Caron2021] M. Caron, H. Touvron, I. Misra, H. Jégou, J. Mairal, P. Bojanowski,
           A. Joulin, "Emerging Properties in Self-Supervised Vision Transformers", ICCV
           2021, arXiv:2104.14294.
    """
    fn = "dino_center_update"
    v.check_tensor(fn, "teacher", teacher, ndim=3)
    if teacher.shape[0] < 1 or teacher.shape[1] < 1:
        raise ValueError(
            f"{fn}: teacher must have shape (N, V_t, K) with N, V_t >= 1, got "
            f"{tuple(teacher.shape)}"
        )
    tensors: list = [("teacher", teacher)]
    _check_center(fn, center, teacher.shape[2], tensors)
    v.check_same_device(fn, tensors)
    v.check_positive_float(fn, "momentum", momentum, allow_zero=True)
    if momentum > 1.0:
        raise ValueError(f"{fn}: momentum must be in [0, 1], got {momentum!r}")
    dtype = v.compute_dtype(center, teacher)
    total = teacher.to(dtype).sum(dim=(0, 1))
    count = teacher.shape[0] * teacher.shape[1]
    if gather_distributed and distributed.is_active():
        total = distributed.all_reduce_sum(total)
        count *= distributed.world_size()
    return momentum * center.to(dtype) + (1.0 - momentum) * total / count


class DINOLoss(nn.Module):
    """Module form of :func:`dino` holding the centre; ``forward(student, teacher)``.

    The ``(K,)`` centre starts at zero and, after every ``forward``, follows
    :func:`dino_center_update` with ``center_momentum`` (it is a buffer, so it is saved in
    the state dict).
    """

    center: Tensor

    def __init__(
        self,
        dim: int,
        *,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        v.check_int("DINOLoss", "dim", dim, low=1)
        self.student_temperature, self.teacher_temperature = (
            student_temperature,
            teacher_temperature,
        )
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(dim))

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        loss = dino(
            student,
            teacher,
            self.center,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
        )
        self.center = dino_center_update(self.center, teacher, self.center_momentum)
        return loss
