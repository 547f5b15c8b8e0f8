"""What the AMCL experiments share: the frameworks, the arms and their training configs.

Wang et al. (ECCV 2024, arXiv:2310.05615) give AMCL forms of SimCLR, MoCo and Barlow Twins
(Table 2).  An *arm* is one way of training the same network on the same data:

``baseline``
    the framework's own loss with one projection head and a constant temperature
    (``nt_xent`` for SimCLR, ``moco`` for MoCo, ``barlow_twins`` for Barlow Twins);
``amcl``
    the framework's AMCL loss with ``heads`` heads and the shared
    :class:`~amcl_lab.amcl.PairTemperature` network (the paper's method);
``scalar``
    the AMCL loss with ``heads`` heads and one learned temperature for every pair
    (:class:`~amcl_lab.amcl.ScalarTemperature`): the control that learns the temperature
    level with AMCL's objective but has no per-pair temperatures;
``matched``
    the AMCL loss with one head at a constant temperature equal to the ``amcl`` arm's
    median learned temperature: the control for "a different temperature level".

The negative form of the AMCL losses (``amcl_mode``: the paper's hardest negative ``max``,
the second code release's ``topk``, the log-sum-exp ``softmax`` of the paper's Fig. 5 or
``nt_xent``, :data:`amcl_lab.losses.amcl.MODES`), the regulariser weight ``amcl_beta`` and
``grad_clip`` (applied to every arm, so all arms share one recipe) are config fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amcl_lab import _validation as v
from amcl_lab import engine
from amcl_lab.losses.amcl import MODES

from ._protocol import ExperimentConfig, derive_loss, train_config

__all__ = ["ARMS", "FRAMEWORKS", "AMCLConfig", "amcl_options", "arm_config"]

#: Framework -> (baseline loss, AMCL loss).
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "simclr": ("nt_xent", "amcl_nt_xent"),
    "moco": ("moco", "amcl_moco"),
    "barlow_twins": ("barlow_twins", "amcl_barlow_twins"),
}
ARMS = ("baseline", "amcl", "scalar", "matched")


@dataclass(frozen=True)
class AMCLConfig(ExperimentConfig):
    """:class:`ExperimentConfig` plus the AMCL arms' settings.

    ``loss`` is derived from ``framework`` (always the framework's AMCL loss; a loss that is
    no framework's AMCL loss is an error); ``heads`` are the AMCL arms' heads,
    ``temperature`` the baseline's constant temperature (and the starting value of the
    scalar control).
    """

    framework: str = "simclr"  # simclr | moco | barlow_twins
    loss: str = ""  # derived: the framework's AMCL loss (an explicit other value is an error)
    heads: int = 3  # AMCL arms: the paper's C
    baseline_heads: int = 1
    amcl_mode: str = "softmax"  # AMCL negatives: max | topk | softmax | nt_xent (not Barlow)
    amcl_k: int = 0  # top-k negatives, with amcl_mode=topk only
    amcl_beta: float = 1e-4  # weight of the temperature regulariser Omega

    def __post_init__(self) -> None:
        fn = type(self).__name__
        derive_loss(self, {name: losses[1] for name, losses in FRAMEWORKS.items()})
        super().__post_init__()
        v.check_choice(fn, "amcl_mode", self.amcl_mode, MODES)
        v.check_positive_float(fn, "amcl_beta", self.amcl_beta, allow_zero=True)
        if (self.amcl_mode == "topk") != (self.amcl_k > 0):
            raise ValueError(
                f"{fn}: amcl_k (> 0) goes with amcl_mode='topk' only, got amcl_k="
                f"{self.amcl_k} and amcl_mode={self.amcl_mode!r}"
            )
        v.check_int(fn, "baseline_heads", self.baseline_heads, low=1)
        for arm in ARMS:  # every arm must be a valid training config
            arm_config(self, arm, augment=self.augment, seed=self.seed)


def amcl_options(
    config: AMCLConfig,
    *,
    mode: str | None = None,
    k: int | None = None,
    beta: float | None = None,
) -> tuple[str, ...]:
    """The ``loss_options`` of the AMCL losses: the negative form and beta (Barlow: beta).

    ``mode``, ``k`` and ``beta`` default to the config's ``amcl_mode``, ``amcl_k`` and
    ``amcl_beta``; ``loss_options`` of the config are appended.
    """
    mode = config.amcl_mode if mode is None else mode
    k = config.amcl_k if k is None else k
    beta = config.amcl_beta if beta is None else beta
    options = [f"beta={beta!r}", *config.loss_options]
    if config.framework != "barlow_twins":  # Barlow Twins has no negatives to select
        options.insert(0, f"mode={mode!r}")
        if mode == "topk":
            options.insert(1, f"k={k}")
    return tuple(options)


def arm_config(
    config: AMCLConfig,
    arm: str,
    *,
    augment: str,
    seed: int,
    temperature: float | None = None,
    options: tuple[str, ...] | None = None,
    **changes: Any,
) -> engine.TrainConfig:
    """The training config of ``arm`` (:data:`ARMS`) with one augmentation set and seed.

    ``temperature`` is the ``matched`` arm's constant temperature (the ``amcl`` arm's median
    learned one); the other arms ignore it.  ``options`` replace the AMCL arms' loss options
    (:func:`amcl_options` of the config); ``changes`` apply last.
    """
    v.check_choice("arm_config", "arm", arm, ARMS)
    baseline_loss, amcl_loss = FRAMEWORKS[config.framework]
    common: dict[str, Any] = {"augment": augment, "seed": seed}
    if arm == "baseline":
        fields: dict[str, Any] = {"loss": baseline_loss, "heads": config.baseline_heads}
        fields["loss_options"] = ()
    elif arm == "matched":
        fields = {"loss": amcl_loss, "heads": config.baseline_heads, "loss_options": ()}
        fields |= {"adaptive_temperature": False, "loss_options": options or amcl_options(config)}
        fields["temperature"] = config.temperature if temperature is None else temperature
    else:
        fields = {"loss": amcl_loss, "heads": config.heads, "adaptive_temperature": True}
        fields["temperature_model"] = "scalar" if arm == "scalar" else "pair"
        fields["loss_options"] = options or amcl_options(config)
    return train_config(config, **{**common, **fields, **changes})
