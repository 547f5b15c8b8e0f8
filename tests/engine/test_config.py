"""TrainConfig validation and strict ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses

import pytest

from amcl_lab.engine import OBJECTIVES, TrainConfig, apply_overrides, config_dict
from amcl_lab.experiments import ExperimentConfig


def test_overrides_parse_to_the_field_types():
    cfg = apply_overrides(
        TrainConfig(),
        [
            "steps=7",
            "lr=1e-2",
            "supervised=true",
            "loss=supcon",
            "augment=ac",
            "geometry=alignment,uniformity",
            "loss_options=variant=in",
            "optimizer_options=nesterov=True;dampening=0.0",
        ],
    )
    assert (cfg.steps, cfg.lr, cfg.supervised, cfg.loss) == (7, 0.01, True, "supcon")
    assert cfg.augment == "ac"
    assert cfg.geometry == ("alignment", "uniformity")
    assert cfg.loss_options == ("variant=in",)
    assert cfg.optimizer_options == ("nesterov=True", "dampening=0.0")
    assert apply_overrides(cfg, ["geometry="]).geometry == ()
    assert apply_overrides(cfg, ["lr=3"]).lr == 3.0 and isinstance(
        apply_overrides(cfg, ["lr=3"]).lr, float
    )


def test_subclass_fields_can_be_overridden():
    cfg = apply_overrides(ExperimentConfig(), ["seeds=5", "threads=2"])
    assert (cfg.seeds, cfg.threads) == (5, 2)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("stepz=3", r"unknown key 'stepz'.*valid keys: .*steps"),
        ("steps=1.5", "steps expects an int, got '1.5'"),
        ("lr=fast", "lr expects a float, got 'fast'"),
        ("supervised=maybe", r"supervised expects a bool \(true/false\)"),
        ("steps", "overrides must look like key=value"),
        ("loss=nope", r"loss must be one of \(.*'nt_xent'"),
        ("views=1", "views must be >= 2"),
        ("augment=abx", "distinct letters from 'abcde'"),
        ("loss_options=novalue", "entries must look like 'key=value'"),
        ("geometry=alignment,curvature", r"geometry must be one of"),
        ("seeds=0", "seeds must be >= 1"),
    ],
)
def test_bad_overrides_are_rejected_with_the_valid_choices(override, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(ExperimentConfig(), [override])


def test_configs_are_frozen_and_validated_at_construction():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="loss 'ce' is supervised; set supervised=true"):
        TrainConfig(loss="ce", proj_dim=0)
    with pytest.raises(ValueError, match="needs a projector; set proj_dim >= 1"):
        TrainConfig(proj_dim=0)
    with pytest.raises(ValueError, match=r"'ce' needs proj_dim=0"):
        TrainConfig(loss="ce", supervised=True)
    with pytest.raises(ValueError, match=r"'nt_xent' does not use class labels; .*supcon"):
        TrainConfig(supervised=True)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        TrainConfig(temperature=0.0)
    assert TrainConfig(loss="ce", supervised=True, proj_dim=0, views=1).views == 1


def test_config_dict_is_json_ready():
    d = config_dict(TrainConfig(geometry=("uniformity",)))
    assert d["geometry"] == ["uniformity"] and d["steps"] == 500


def test_every_objective_kind_is_known_and_registry_losses_are_selectable():
    kinds = {spec.kind for spec in OBJECTIVES.values()}
    assert kinds == {"pairwise", "labels", "multiview", "amcl", "moco", "ema_target", "ce"}
    for name in ("nt_xent", "nt_xent_decoupled", "info_nce", "supcon", "barlow_twins"):
        assert name in OBJECTIVES
    assert {"amcl_nt_xent", "amcl_info_nce", "amcl_barlow_twins"} <= set(OBJECTIVES)
    # MoCo trains with the engine's momentum network and queue
    assert OBJECTIVES["moco"].kind == OBJECTIVES["amcl_moco"].kind == "moco"
    # BYOL and MoCo v3 with an EMA target network and a predictor
    assert OBJECTIVES["byol"].kind == OBJECTIVES["moco_v3"].kind == "ema_target"


@pytest.mark.parametrize("raw", ["false", "False", "FALSE", "true", "True", "tRuE"])
def test_option_flags_parse_true_and_false_in_any_case(raw):
    """Before: ``loss_options=decoupled=false`` kept the string 'false', which is truthy."""
    cfg = apply_overrides(TrainConfig(), [f"loss_options=decoupled={raw}"])
    assert cfg.loss_kwargs == {"decoupled": raw.lower() == "true"}
    cfg = apply_overrides(TrainConfig(), [f"optimizer_options=nesterov={raw};dampening=0.0"])
    assert cfg.optimizer_kwargs["nesterov"] is (raw.lower() == "true")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("loss_options=decoupled=maybe", r"decoupled='maybe' must be true or false"),
        ("loss_options=decoupled=1", r"decoupled=1 must be true or false"),
        ("optimizer_options=nesterov=yes", r"nesterov='yes' must be true or false .*SGD"),
        ("supervised=1", r"supervised expects a bool \(true/false\), got '1'"),
        ("supervised=yes", r"supervised expects a bool \(true/false\), got 'yes'"),
    ],
)
def test_a_flag_given_anything_but_true_or_false_is_an_error(override, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(TrainConfig(), [override])


def test_sam_option_flags_are_checked_against_sam_and_its_base_optimizer():
    cfg = apply_overrides(TrainConfig(optimizer="sam"), ["optimizer_options=nesterov=true"])
    assert cfg.optimizer_kwargs == {"nesterov": True}
    with pytest.raises(ValueError, match=r"adaptive='no' must be true or false .*SAM"):
        apply_overrides(TrainConfig(optimizer="sam"), ["optimizer_options=adaptive=no"])


@pytest.mark.parametrize("override", ["lr=1e308", "weight_decay=1e39", "rho=-1e300"])
def test_floats_beyond_the_float32_range_are_refused(override):
    """Before: --set lr=1e308 crashed inside the optimiser (float32 overflow traceback)."""
    with pytest.raises(ValueError, match=r"must be at most 3.403e\+38 in magnitude"):
        apply_overrides(TrainConfig(), [override])
