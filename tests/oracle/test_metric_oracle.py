"""The metric oracle (``oracle.check_metric``): amcl_lab's metrics pass, the mutants fail.

The metric table (``registry.METRICS``) is separate from the loss registry: the generic loss
tests and the README loss table see no metric.  Mutants, each a mistake of fast re-written
metrics:

* ``uniformity_with_self_pairs``: the mean runs over all N^2 pairs, i = j included (biased up);
* ``uniformity_unnormalized``: the Gaussian potential of the raw rows, not the unit ones;
* ``alignment_power_of_squared``: ``|u1 - u2|^(2 alpha)``, the exponent applied to the squared
  distance;
* ``tolerance_with_self_pairs``: the conditional mean counts each sample with itself;
* ``effective_rank_of_eigenvalues``: the entropy of the squared singular values (covariance
  eigenvalues), not of the singular values;
* ``effective_rank_never_centred``: ``center=True`` ignored.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amcl_lab import cli, metrics, oracle, registry


def uniformity_with_self_pairs(z, t=2.0, chunk_size=1024):
    u = F.normalize(z, dim=1)
    return torch.log(torch.exp(-t * (u[:, None] - u[None]).pow(2).sum(-1)).mean())


def uniformity_unnormalized(z, t=2.0, chunk_size=1024):
    n = z.shape[0]
    d2 = (z[:, None] - z[None]).pow(2).sum(-1)
    i, j = torch.triu_indices(n, n, 1)
    return torch.logsumexp(-t * d2[i, j], 0) - torch.log(torch.tensor(n * (n - 1) / 2.0))


def alignment_power_of_squared(z1, z2, alpha=2.0):
    u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    return (u1 - u2).pow(2).sum(1).pow(alpha).mean()


def tolerance_with_self_pairs(z, labels, reading="conditional"):
    if reading == "literal":
        return metrics.tolerance(z, labels, reading=reading)
    u = F.normalize(z, dim=1)
    same = (labels[:, None] == labels[None]).to(u.dtype)
    return (u @ u.T * same).sum() / same.sum()


def _entropy_rank(weights):
    p = weights / weights.sum()
    return torch.exp(-(p * torch.log(p)).sum())


def _singular_values(z, center):
    x = z - z.mean(0, keepdim=True) if center else z
    s = torch.linalg.svdvals(x)
    return s[s > max(x.shape) * torch.finfo(x.dtype).eps * s[0]]


def effective_rank_of_eigenvalues(z, center=True):
    return _entropy_rank(_singular_values(z, center) ** 2)


def effective_rank_never_centred(z, center=True):
    return _entropy_rank(_singular_values(z, False))


MUTANTS = {
    "uniformity_with_self_pairs": (uniformity_with_self_pairs, "uniformity"),
    "uniformity_unnormalized": (uniformity_unnormalized, "uniformity"),
    "alignment_power_of_squared": (alignment_power_of_squared, "alignment"),
    "tolerance_with_self_pairs": (tolerance_with_self_pairs, "tolerance"),
    "effective_rank_of_eigenvalues": (effective_rank_of_eigenvalues, "effective_rank"),
    "effective_rank_never_centred": (effective_rank_never_centred, "effective_rank"),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(registry.METRICS))
def test_amcl_lab_metrics_pass(name, dtype):
    report = oracle.check_metric(getattr(metrics, name), name, dtype=dtype, max_examples=40)
    assert report.passed, str(report)


@pytest.mark.mutation
@pytest.mark.parametrize("name", list(MUTANTS))
def test_metric_mutant_is_flagged(name):
    fn, metric = MUTANTS[name]
    report = oracle.check_metric(fn, metric, dtype=torch.float64, max_examples=100)
    assert not report.passed, f"{name} was not flagged:\n{report}"


def test_the_metric_table_is_not_the_loss_registry():
    assert set(registry.METRICS) == {"alignment", "uniformity", "tolerance", "effective_rank"}
    assert not set(registry.METRICS) & set(registry.REGISTRY)
    assert "uniformity" not in registry.markdown_table()
    assert oracle.metric_names() == list(registry.METRICS)


def test_check_accepts_a_metric_name_and_the_cli_too(capsys):
    assert oracle.check(metrics.uniformity, "uniformity", max_examples=5).passed
    argv = ["oracle", "amcl_lab.metrics:effective_rank", "--reference", "effective_rank"]
    assert cli.main([*argv, "--max-examples", "5"]) == 0
    assert "vs reference 'effective_rank'" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown reference metric 'rank'; registered: "):
        oracle.check_metric(metrics.effective_rank, "rank")
    with pytest.raises(ValueError, match="; metrics: alignment, effective_rank"):
        oracle.check(metrics.effective_rank, "erank")
