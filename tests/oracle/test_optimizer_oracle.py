"""The optimizer oracle (``oracle.check_optimizer``) and its mutation suite.

amcl_lab's SAM (both calling conventions), ASAM (``eta=0``), SAF and MESA pass; each mutant
below makes one mistake seen in SAM-family code and must be flagged.  The SAM mutants are
variations of :class:`ReadableSAM`, a second, deliberately plain implementation that passes
too (so a flagged mutant is flagged for its one change):

* ``restore_only_with_grad``: restores only the parameters that have a gradient in the
  second pass, so one whose gradient disappeared stays perturbed (davda54/sam);
* ``saved_weights_by_second_grad``: looks the saved weights up for every parameter with a
  second-pass gradient, so one whose gradient appears there raises ``KeyError`` (davda54/sam's
  ``KeyError: 'old_p'``);
* ``per_parameter_norm``: normalises each parameter's gradient on its own, not globally;
* ``group_rho_ignored``: every group gets the constructor's ``rho``;
* ``asam_scale_once``: ASAM's step ``T g / |T g|`` instead of ``T^2 g / |T g|``;
* ``no_restore``: the base step starts from the perturbed weights;
* ``zero_grad_ignored``: ``first_step(zero_grad=True)`` keeps the first gradient, so the
  second pass adds to it;
* ``state_without_base_optimizer``: ``state_dict()`` holds SAM's own (empty) state, not the
  base optimizer's momentum buffers (davda54/sam: its state dict is SAM's ``self.state``);
* ``saf_missing_targets_as_zeros``: never-written buffer rows are read as zero logits (a
  uniform target; the released SAF code's zero-initialised buffer);
* ``saf_tau_once``: ``tau`` instead of ``tau^2`` in front of the KL;
* ``mesa_parameters_only``: the EMA teacher averages parameters but not BatchNorm buffers.
"""

from __future__ import annotations

import functools

import pytest
import torch

from amcl_lab import cli, oracle
from amcl_lab.optim import MESA, SAF, SAM, ema_update_, trajectory_loss
from amcl_lab.oracle.optimizers import mesa_cases, sam_cases

EXAMPLES = 30


class ReadableSAM(SAM):
    """SAM written out plainly (ASAM with eta = 0), with one hook per step of the algorithm."""

    def _items(self):
        return [
            (p, group["rho"], group["adaptive"])
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]

    def _scaled(self, p, adaptive):
        return p.detach().abs() * p.grad if adaptive else p.grad

    def _norm(self, items):
        return torch.linalg.vector_norm(
            torch.stack([self._scaled(p, ad).norm() for p, _, ad in items])
        )

    def _step_of(self, p, rho, adaptive, norm):
        factor = p.detach().abs() if adaptive else 1.0
        return factor * self._scaled(p, adaptive) * rho / (norm + 1e-12)

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        items = self._items()
        norm = self._norm(items)
        self.saved = {p: p.detach().clone() for p, _, _ in items}
        for p, rho, adaptive in items:
            p.add_(self._step_of(p, rho, adaptive, norm))
        if zero_grad:
            self.zero_grad()

    def _restore(self):
        for p, w in self.saved.items():
            p.copy_(w)

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        self._restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()


class RestoreOnlyWithGrad(ReadableSAM):
    def _restore(self):
        for p, w in self.saved.items():
            if p.grad is not None:
                p.copy_(w)


class SavedWeightsBySecondGrad(ReadableSAM):
    def _restore(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.copy_(self.saved[p])


class PerParameterNorm(ReadableSAM):
    @torch.no_grad()
    def first_step(self, zero_grad=False):
        items = self._items()
        self.saved = {p: p.detach().clone() for p, _, _ in items}
        for p, rho, adaptive in items:
            p.add_(self._step_of(p, rho, adaptive, self._scaled(p, adaptive).norm()))
        if zero_grad:
            self.zero_grad()


class GroupRhoIgnored(ReadableSAM):
    def _items(self):
        return [(p, self.defaults["rho"], ad) for p, _, ad in super()._items()]


class AsamScaleOnce(ReadableSAM):
    def _step_of(self, p, rho, adaptive, norm):
        return self._scaled(p, adaptive) * rho / (norm + 1e-12)


class NoRestore(ReadableSAM):
    def _restore(self):
        pass


class ZeroGradIgnored(ReadableSAM):
    def first_step(self, zero_grad=False):
        super().first_step(zero_grad=False)


class StateWithoutBaseOptimizer(ReadableSAM):
    def state_dict(self):
        return torch.optim.Optimizer.state_dict(self)

    def load_state_dict(self, state_dict):
        torch.optim.Optimizer.load_state_dict(self, state_dict)
        self.base_optimizer.param_groups = self.param_groups


class SafMissingTargetsAsZeros(SAF):
    def forward(self, logits, indices, epoch):
        if not self.active(epoch):
            self.buffer._write(indices, logits, epoch)
            return logits.new_zeros(())
        past, _ = self.buffer._read(indices, epoch)
        self.buffer._write(indices, logits, epoch)
        return trajectory_loss(logits, past.to(logits), self.temperature, self.weight)


class SafTauOnce(SAF):
    def forward(self, logits, indices, epoch):
        return super().forward(logits, indices, epoch) / self.temperature


class MesaParametersOnly(MESA):
    def update(self, model):
        ema_update_(list(self.teacher.parameters()), list(model.parameters()), self.decay)


ASAM = functools.partial(SAM, eta=0.0)

PASSING = {
    "amcl_lab SAM, two_step": (SAM, "sam", "two_step"),
    "amcl_lab SAM, closure": (SAM, "sam", "closure"),
    "amcl_lab ASAM eta=0, two_step": (ASAM, "asam", "two_step"),
    "amcl_lab ASAM eta=0, closure": (ASAM, "asam", "closure"),
    "ReadableSAM": (ReadableSAM, "sam", "two_step"),
    "ReadableSAM as ASAM": (ReadableSAM, "asam", "closure"),
    "amcl_lab SAF": (SAF, "saf", "two_step"),
    "amcl_lab MESA": (MESA, "mesa", "two_step"),
}

MUTANTS = {
    "restore_only_with_grad": (RestoreOnlyWithGrad, "sam", "gradient in pass 1 only"),
    "saved_weights_by_second_grad": (SavedWeightsBySecondGrad, "sam", "raised KeyError"),
    "per_parameter_norm": (PerParameterNorm, "sam", "differs"),
    "group_rho_ignored": (GroupRhoIgnored, "sam", "differs"),
    "asam_scale_once": (AsamScaleOnce, "asam", "differs"),
    "no_restore": (NoRestore, "sam", "after step 0"),
    "zero_grad_ignored": (ZeroGradIgnored, "sam", "after step 0"),
    "state_without_base_optimizer": (StateWithoutBaseOptimizer, "sam", "load_state_dict"),
    "saf_missing_targets_as_zeros": (SafMissingTargetsAsZeros, "saf", "value differs"),
    "saf_tau_once": (SafTauOnce, "saf", "value differs"),
    "mesa_parameters_only": (MesaParametersOnly, "mesa", "differs"),
}


@pytest.mark.parametrize("name", list(PASSING))
def test_reference_implementations_pass(name):
    factory, reference, adapter = PASSING[name]
    report = oracle.check_optimizer(factory, reference, adapter=adapter, max_examples=EXAMPLES)
    assert report.passed, str(report)
    assert report.examples == EXAMPLES and report.steps > EXAMPLES


@pytest.mark.mutation
@pytest.mark.parametrize("name", list(MUTANTS))
def test_optimizer_mutant_is_flagged(name):
    factory, reference, shows = MUTANTS[name]
    report = oracle.check_optimizer(factory, reference, max_examples=60)
    assert not report.passed, f"{name} was not flagged:\n{report}"
    assert shows in report.failure, str(report)


def test_the_davda54_bugs_are_found_on_minimal_models():
    """A parameter whose gradient disappears stays perturbed; one whose gradient appears
    raises (the ported pytorch-optimizer tests), each shrunk to the smallest model."""
    left = oracle.check_optimizer(
        RestoreOnlyWithGrad, "sam", strategy=sam_cases(pass2_only=False), max_examples=60
    )
    assert "first_only.weight (gradient in pass 1 only) differs" in left.failure
    assert "with a branch in pass 1 only" in left.worst[0]
    raised = oracle.check_optimizer(SavedWeightsBySecondGrad, "sam", max_examples=60)
    assert "with a branch in pass 2 only" in raised.worst[0]
    assert "in second_step at step 0" in raised.failure
    text = str(raised)
    assert text.startswith("oracle MISMATCH") and "minimal failing case:" in text
    assert raised.to_dict()["passed"] is False


def test_mesa_mutant_needs_batchnorm():
    report = oracle.check_optimizer(
        MesaParametersOnly, "mesa", strategy=mesa_cases(), max_examples=60
    )
    assert "BatchNorm1d" in report.worst[0]


def test_amcl_lab_asam_default_eta_is_not_davda54s_asam():
    report = oracle.check_optimizer(SAM, "asam", max_examples=30, shrink=False)
    assert not report.passed  # eta = 0.01 vs 0
    report = oracle.check_optimizer(SAM, "asam", max_examples=10, reference_options={"eta": 0.01})
    assert report.passed, str(report)


def _raises(*args, **kwargs):
    raise TypeError("no such optimizer")


def test_arguments_and_a_factory_that_raises():
    with pytest.raises(ValueError, match="unknown reference 'adam'"):
        oracle.check_optimizer(SAM, "adam")
    with pytest.raises(ValueError, match="unknown adapter 'three_step'"):
        oracle.check_optimizer(SAM, "sam", adapter="three_step")
    with pytest.raises(ValueError, match="max_examples must be an int >= 1"):
        oracle.check_optimizer(SAM, "sam", max_examples=0)
    with pytest.raises(ValueError, match="reference_options apply to 'sam' and 'asam'"):
        oracle.check_optimizer(SAF, "saf", reference_options={"eta": 0.0})
    report = oracle.check_optimizer(_raises, "sam", max_examples=3)
    assert report.failure == "the factory raised TypeError: no such optimizer"


def test_cli_optimizer(capsys):
    argv = ["oracle", "amcl_lab.optim:SAM", "--optimizer", "sam", "--max-examples", "5"]
    assert cli.main(argv) == 0
    assert "oracle PASS: amcl_lab.optim:SAM vs reference 'sam'" in capsys.readouterr().out
    argv = ["oracle", "test_optimizer_oracle:NoRestore", "--optimizer", "sam"]
    assert cli.main([*argv, "--adapter", "closure"]) == 1
    assert "(adapter closure)" in capsys.readouterr().out
