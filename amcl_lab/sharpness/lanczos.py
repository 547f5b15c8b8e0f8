"""Seeded random probe blocks and block Lanczos with full reorthogonalisation.

Shared by :mod:`.eigen` (top eigenvalues), :mod:`.density` (stochastic Lanczos quadrature)
and, for the probes, :mod:`.trace`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .operator import HessianOperator


def random_rows(
    shape: tuple[int, int], op: HessianOperator, gen: torch.Generator, kind: str
) -> Tensor:
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, generator=gen, device=gen.device)
        return (2.0 * bits - 1.0).to(device=op.device, dtype=op.dtype)
    return torch.randn(shape, generator=gen, device=gen.device).to(device=op.device, dtype=op.dtype)


def generator(seed: int, device: torch.device) -> torch.Generator:
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    return torch.Generator(device=gen_device).manual_seed(int(seed))  # NumPy ints too


def _orthonormal_rows(
    w: Tensor,
    basis: Tensor,
    op: HessianOperator,
    gen: torch.Generator,
    scales: Sequence[float] | None = None,
    norms: Sequence[float] | None = None,
) -> Tensor:
    """Orthonormalise the rows of ``w`` against ``basis`` and each other (Gram-Schmidt, twice).

    A row whose remainder is below ``sqrt(eps)`` times its scale (its norm before any
    projection, ``scales``; default: its own norm) lies in the span already (Krylov
    breakdown: an invariant subspace was found).  It is replaced by a random direction
    orthogonal to everything, so the block keeps its size and the iteration continues into
    the rest of the space; rows are dropped only when the space is exhausted.

    ``norms``: the rows of ``w`` are already orthogonal to ``basis`` (projected twice, as
    :func:`lanczos` does) and these are their norms: a single row is then only normalised,
    instead of being projected twice more (a random replacement still is).
    """
    tiny = math.sqrt(torch.finfo(op.dtype).eps)
    if norms is not None and w.shape[0] == 1 and scales is not None:
        norm = norms[0]
        if scales[0] > 0 and norm > tiny * scales[0]:
            return w / norm
    rows: list[Tensor] = []
    for i, row in enumerate(w):
        for attempt in range(2):
            q = row
            scale = float(torch.linalg.vector_norm(q))
            if attempt == 0 and scales is not None:
                scale = scales[i]
            for _ in range(2):
                for b in (basis, *([torch.stack(rows)] if rows else [])):
                    if b.shape[0]:
                        q = q - (b @ q) @ b
            norm = float(torch.linalg.vector_norm(q))
            if scale > 0 and norm > tiny * scale:
                rows.append(q / norm)
                break
            if attempt == 0:
                row = random_rows((1, op.dim), op, gen, "gaussian")[0]
        if basis.shape[0] + len(rows) >= op.dim:
            break
    return torch.stack(rows) if rows else w.new_zeros(0, op.dim)


@dataclass
class Krylov:
    """State of a block Lanczos run: basis rows ``q[:m]`` and ``t = Q H Q^T`` (float64)."""

    q: Tensor
    t: Tensor
    m: int
    residual_gram: Tensor  # W W^T of the last block's unprojected remainder (float64)
    last: tuple[int, int]
    breakdown: bool  # some row of the last block had a negligible remainder (invariant space)


def lanczos(
    op: HessianOperator, start: Tensor, max_vectors: int, gen: torch.Generator
) -> Iterator[Krylov]:
    """Block Lanczos with full reorthogonalisation; yields the state after every block.

    The projected matrix is computed column block by column block as ``Q (H Q_j)^T`` over
    the whole basis (Rayleigh-Ritz), so it stays the exact projection whatever rounding or
    restarts happen.  Residual of a Ritz pair ``(theta, s)``: ``||W^T s_last||`` with ``W``
    the last block's remainder, i.e. ``sqrt(s_last^T (W W^T) s_last)``.
    """
    cap = min(max_vectors, op.dim)
    q = start.new_empty(cap, op.dim)
    t = torch.zeros(cap, cap, dtype=torch.float64)
    first = _orthonormal_rows(start, q[:0], op, gen)[:cap]
    lo, hi = 0, first.shape[0]
    q[lo:hi] = first
    projected = t.numpy()  # a view: T is assembled in NumPy (small writes cost microseconds)
    while True:
        w = op.matmat(q[lo:hi])
        scales = torch.linalg.vector_norm(w, dim=1).tolist()  # |H q| before projection
        basis = q[:hi]
        coef = basis @ w.T
        w = torch.addmm(w, coef.T, basis, alpha=-1)
        again = basis @ w.T
        w = torch.addmm(w, again.T, basis, alpha=-1)
        coef = (coef + again).double().cpu().numpy()
        projected[:hi, lo:hi] = coef
        projected[lo:hi, :hi] = coef.T
        projected[lo:hi, lo:hi] = 0.5 * (coef[lo:hi] + coef[lo:hi].T)
        gram = (w @ w.T).double().cpu()
        tiny = math.sqrt(torch.finfo(op.dtype).eps)
        norms = [max(g, 0.0) ** 0.5 for g in gram.diagonal().tolist()]
        breakdown = any(r <= tiny * sc for r, sc in zip(norms, scales, strict=True))
        yield Krylov(q, t, hi, gram, (lo, hi), breakdown)
        if hi >= cap:
            return
        new = _orthonormal_rows(w, q[:hi], op, gen, scales, norms)[: cap - hi]
        if new.shape[0] == 0:
            return
        q[hi : hi + new.shape[0]] = new
        lo, hi = hi, hi + new.shape[0]
