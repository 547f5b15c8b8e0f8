"""The oracle's default inputs reach the edges of the documented domain.

Subtle bugs (overflow at small temperature, a missing norm floor, a 1-D or 2-row corner
case) show only at the domain's edges, so the whole-sample strategies the oracle draws from
must reach them (within a factor of 2): temperatures down to 1e-3 and up to 1e3, row norms
from 1e-3 to 1e3, dimension 1 and the smallest batch.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, find, settings

from amcl_lab import registry


def _norms(sample):
    tensors = [a for a in sample.args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    return torch.cat([torch.linalg.vector_norm(t, dim=-1).flatten() for t in tensors])


EDGES = {
    "temperature 1e-3": lambda s: s.kwargs["temperature"] < 2e-3,
    "temperature 1e3": lambda s: s.kwargs["temperature"] > 5e2,
    "norm 1e-3": lambda s: float(_norms(s).min()) < 2e-3,
    "norm 1e3": lambda s: float(_norms(s).max()) > 5e2,
    "dimension 1": lambda s: s.args[0].shape[-1] == 1,
}
# the smallest batch each signature documents: 2 rows per view, one query, two items
SMALLEST = {
    "nt_xent": lambda s: s.args[0].shape[0] == 2,
    "info_nce": lambda s: s.args[0].shape[0] == 1,
    "supcon": lambda s: s.args[0].shape[0] * s.args[0].shape[1] == 2,
}


@pytest.mark.parametrize("edge", [*EDGES, "smallest batch"])
@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_default_strategy_reaches_the_edge(name, edge):
    condition = SMALLEST[name] if edge == "smallest batch" else EDGES[edge]
    strategy = registry.get(name).strategy(dtype=torch.float64, device="cpu")
    found = find(strategy, condition, settings=settings(max_examples=2000, phases=[Phase.generate]))
    assert condition(found)
