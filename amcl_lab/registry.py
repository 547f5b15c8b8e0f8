"""The loss registry: one :class:`LossSpec` per reference loss.

Design note.  Every consumer that needs to know "which losses exist and how to call them"
reads this registry instead of keeping its own list: the generic tests in
``tests/registry`` (finite values and gradients, float32 against float64, ``gradcheck``,
error messages), the property tests (which losses a property applies to), the oracle
(how to draw valid inputs and how close a candidate must be), and the loss table in the
README (:func:`markdown_table`).  Adding a loss means adding one entry here; per-test
exceptions are data in the entry, never ``if name == ...`` branches inside a test.  The
module stays one file past a thousand lines on purpose: it is a table that is read as a
whole, every entry with the same fields next to the entries it is compared with, and
splitting it by loss family would only scatter its rows.

The representation metrics that the oracle checks like losses are rows of a separate table,
:data:`METRICS` (last section), which none of the loss consumers iterates.

An entry alone does not prove a loss correct: the value is checked against independent
NumPy transcriptions and paper identities in ``tests/properties``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from . import losses, metrics
from .samples import ErrorInput, SampleInput, Tolerance
from .testing import strategies as ams

__all__ = [
    "METRICS",
    "PROPERTIES",
    "REGISTRY",
    "LossSpec",
    "Override",
    "get",
    "get_metric",
    "markdown_table",
    "names",
    "register",
    "register_metric",
]

#: Statements a registered loss can be checked against; entries list the ids that apply.
PROPERTIES: dict[str, str] = {
    "value": "equals an independent float64 NumPy transcription of the paper's formula",
    "hardness": "negative gradient = Boltzmann weight / tau; positive gradient = -(1 - p_pos)/tau",
    "limits": "tau L -> max(s_neg) - s_pos as tau -> 0; negative weights -> uniform as tau -> inf",
    "invariance": "invariant to batch permutation, global rotation and positive row rescaling",
    "reduction": "reduces to a simpler loss in a special case (stated per loss)",
    "gradcheck": "autograd gradient matches finite differences in float64",
    "stability": "finite value and gradient for tau in [1e-3, 1e3], row norms in [1e-6, 1e6]",
}


@dataclass(frozen=True)
class Override:
    """A scoped exception to a generic test: which test, which sample and dtype, and why.

    ``sample`` and ``dtype`` of ``None`` match every sample / dtype.
    """

    test: str
    reason: str
    sample: str | None = None
    dtype: torch.dtype | None = None


@dataclass(frozen=True)
class LossSpec:
    """Everything the tests, the oracle and the docs need to know about one loss.

    Attributes:
        name: registry key.
        fn: the functional reference.
        citation: paper, equation and arXiv id.
        conventions: one line on reduction, normalisation and candidate sets.
        inputs: names of the positional tensor arguments, in order.
        fixed_kwargs: keyword arguments every call of this entry passes (a variant).
        strategy: ``strategy(dtype=..., device=...)`` -> Hypothesis strategy of
            :class:`SampleInput` covering the documented domain.
        sample_inputs: ``sample_inputs(dtype, device)`` -> small named, deterministic cases
            (zero rows, minimal batches, ties, tiny temperature).
        error_inputs: ``error_inputs()`` -> calls that must raise, with message patterns.
        tolerances: per-dtype :class:`Tolerance` for comparing against the float64 value.
        properties: ids from :data:`PROPERTIES` this loss is tested against.
        overrides: scoped exceptions to generic tests.
    """

    name: str
    fn: Callable[..., Tensor]
    citation: str
    conventions: str
    inputs: tuple[str, ...]
    strategy: Callable[..., st.SearchStrategy[SampleInput]]
    sample_inputs: Callable[[torch.dtype, torch.device], Iterable[SampleInput]]
    error_inputs: Callable[[], Iterable[ErrorInput]]
    tolerances: Mapping[torch.dtype, Tolerance]
    properties: tuple[str, ...]
    fixed_kwargs: Mapping[str, Any] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.properties) - set(PROPERTIES)
        if unknown:
            raise ValueError(f"LossSpec {self.name!r}: unknown property ids {sorted(unknown)}")
        if torch.float64 not in self.tolerances:
            raise ValueError(f"LossSpec {self.name!r}: tolerances must include torch.float64")

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """Call the reference with this entry's fixed keyword arguments."""
        return self.fn(*args, **{**self.fixed_kwargs, **kwargs})

    def tolerance(self, dtype: torch.dtype) -> Tolerance:
        """The tolerance for ``dtype`` (float32's for dtypes without their own entry)."""
        fallback = DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES[torch.float32])
        return self.tolerances.get(dtype, fallback)

    def skipped(
        self, test: str, sample: str | None = None, dtype: torch.dtype | None = None
    ) -> Override | None:
        """The override that exempts ``test`` (for ``sample`` at ``dtype``), if any."""
        for o in self.overrides:
            if (
                o.test == test
                and (o.sample is None or o.sample == sample)
                and (o.dtype is None or o.dtype == dtype)
            ):
                return o
        return None


REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
    """Add ``spec`` to :data:`REGISTRY`; a duplicate name is an error."""
    if spec.name in REGISTRY:
        raise ValueError(f"register: a loss named {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> LossSpec:
    """The entry called ``name``; the error lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown reference loss {name!r}; registered: {', '.join(sorted(REGISTRY))}"
        ) from None


def names(property_id: str | None = None) -> list[str]:
    """Registered names, optionally only those declaring ``property_id``."""
    return [n for n, s in REGISTRY.items() if property_id is None or property_id in s.properties]


def markdown_table(table: Mapping[str, LossSpec] | None = None) -> str:
    """The README's table of ``table`` (default :data:`REGISTRY`; :data:`METRICS` for the
    metrics), one row per entry: its name (what ``--reference`` takes) and, when the name is
    not the function's or the entry fixes arguments, the call it stands for."""
    lines = [
        "| name (`--reference`) | reference | conventions | properties |",
        "|---|---|---|---|",
    ]
    for name, spec in (REGISTRY if table is None else table).items():
        fixed = ", ".join(f"{k}={v!r}" for k, v in spec.fixed_kwargs.items())
        call = f"{spec.fn.__name__}({fixed})" if fixed else spec.fn.__name__
        shown = f"`{name}`" if call == name else f"`{name}` = `{call}`"
        properties = ", ".join(spec.properties) or "-"
        lines.append(f"| {shown} | {spec.citation} | {spec.conventions} | {properties} |")
    return "\n".join(lines)


# --- tolerances ----------------------------------------------------------------------------

DEFAULT_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-10),
    torch.float32: Tolerance(rtol=1e-4, atol=1e-4),
    # half-precision inputs are computed in float32; gradients are rounded back to the input
    # dtype, hence the looser relative part.
    torch.float16: Tolerance(rtol=2e-3, atol=1e-3),
    torch.bfloat16: Tolerance(rtol=2e-2, atol=1e-3),
}
# Barlow Twins has no temperature: standardisation divides by sqrt(var + eps), so float32
# rounding of near-constant features is amplified instead.
BARLOW_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(rtol=1e-9, atol=1e-9, inverse_temperature=False),
    torch.float32: Tolerance(rtol=1e-3, atol=1e-3, inverse_temperature=False),
    torch.float16: Tolerance(rtol=2e-2, atol=2e-2, inverse_temperature=False),
    torch.bfloat16: Tolerance(rtol=5e-2, atol=5e-2, inverse_temperature=False),
}


# --- deterministic sample inputs -----------------------------------------------------------


def _randn(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _two_view_cases(with_temperature: bool = True) -> list[tuple[str, Tensor, Tensor, float]]:
    """Named two-view cases; the temperature-specific ones only ``with_temperature``."""
    gen = torch.Generator().manual_seed(1234)
    z1 = _randn(gen, 4, 5)
    zero_row = z1.clone()
    zero_row[0] = 0.0
    small = _randn(gen, 3, 4)
    ones = torch.ones(3, 2, dtype=torch.float64)
    cases = [
        ("random", z1, _randn(gen, 4, 5), 0.5),
        ("near_duplicate", z1, z1 + 1e-3 * _randn(gen, 4, 5), 0.1),
        ("collinear", ones, ones, 1.0),
        ("zero_row", zero_row, _randn(gen, 4, 5), 0.5),
        ("minimal", _randn(gen, 2, 1), _randn(gen, 2, 1), 0.3),
    ]
    if with_temperature:
        cases.append(("tiny_temperature", small, small + 0.3 * _randn(gen, 3, 4), 1e-3))
        cases.append(("large_temperature", z1, _randn(gen, 4, 5), 1e3))
    return cases


def _cast(x: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    return x.to(device=device, dtype=dtype)


def _two_view_samples(
    extra: Callable[[int], Mapping[str, Any]] = lambda n: {}, temperature: bool = True
) -> Callable[[torch.dtype, torch.device], list[SampleInput]]:
    def make(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
        out = []
        for name, a, b, tau in _two_view_cases(temperature):
            kwargs = {"temperature": tau} if temperature else {}
            kwargs.update(extra(a.shape[0]))
            out.append(
                SampleInput((_cast(a, dtype, device), _cast(b, dtype, device)), kwargs, name)
            )
        return out

    return make


def _two_view_errors(
    fn: Callable[..., Tensor], temperature: bool = True
) -> Callable[[], list[ErrorInput]]:
    def make() -> list[ErrorInput]:
        z = torch.randn(4, 3, dtype=torch.float64)
        tau = {"temperature": 0.5} if temperature else {}
        nan = z.clone()
        nan[1, 2] = float("nan")
        cases = [
            (SampleInput((z[:1], z[:1]), tau, "batch_of_one"), "at least 2 rows"),
            (SampleInput((z, z[:, :2]), tau, "shape_mismatch"), "same shape"),
            (SampleInput((z, nan), tau, "nan"), "NaN or inf"),
            (SampleInput((z[0], z[0]), tau, "one_dimensional"), "2-D tensor"),
            (SampleInput((z.long(), z.long()), tau, "integer_dtype"), "floating dtype"),
        ]
        if temperature:
            for bad in (0.0, -1.0, float("inf"), float("nan")):
                cases.append(
                    (
                        SampleInput((z, z), {"temperature": bad}, f"temperature={bad}"),
                        "temperature must be finite and > 0",
                    )
                )
        if "reduction" in fn.__code__.co_varnames:
            cases.append(
                (
                    SampleInput((z, z), {**tau, "reduction": "avg"}, "bad_reduction"),
                    "reduction must be one of",
                )
            )
        return [ErrorInput(s, ValueError, m) for s, m in cases]

    return make


def _hard_errors() -> list[ErrorInput]:
    z = torch.randn(3, 2, dtype=torch.float64)
    return [
        ErrorInput(SampleInput((z, z), {"k": 0}, "k=0"), ValueError, r"k must be in \[1, 4\]"),
        ErrorInput(
            SampleInput((z, z), {"k": 5}, "k too large"), ValueError, r"k must be in \[1, 4\]"
        ),
    ]


def _info_nce_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(99)
    q = _randn(gen, 3, 4)
    cases = [
        ("random", q, _randn(gen, 3, 4), _randn(gen, 6, 4), 0.2),
        ("near_duplicate", q, q + 1e-3 * _randn(gen, 3, 4), _randn(gen, 5, 4), 0.07),
        ("single_query", _randn(gen, 1, 2), _randn(gen, 1, 2), _randn(gen, 1, 2), 1.0),
        (
            "collinear",
            torch.ones(2, 3, dtype=torch.float64),
            torch.ones(2, 3, dtype=torch.float64),
            torch.ones(4, 3, dtype=torch.float64),
            0.5,
        ),
        ("tiny_temperature", q, _randn(gen, 3, 4), _randn(gen, 4, 4), 1e-3),
    ]
    return [
        SampleInput(tuple(_cast(t, dtype, device) for t in (a, b, c)), {"temperature": tau}, name)
        for name, a, b, c, tau in cases
    ]


def _info_nce_errors() -> list[ErrorInput]:
    q = torch.randn(3, 4, dtype=torch.float64)
    return [
        ErrorInput(
            SampleInput((q, q, torch.randn(5, 3, dtype=torch.float64))),
            ValueError,
            "queue must have the feature dimension",
        ),
        ErrorInput(SampleInput((q, q[:2], q)), ValueError, "same shape"),
        ErrorInput(
            SampleInput((q, q, q), {"temperature": -0.1}),
            ValueError,
            "temperature must be finite and > 0",
        ),
        ErrorInput(SampleInput((q[:1], q[:1], None)), ValueError, "at least 2 rows"),
        ErrorInput(SampleInput((q, q, q[:0])), ValueError, "at least 1 rows"),
    ]


def _supcon_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(7)
    cases = [
        ("two_views", _randn(gen, 6, 2, 5), torch.tensor([0, 0, 1, 1, 2, 2]), 0.1),
        ("unique_labels", _randn(gen, 4, 2, 3), torch.arange(4), 0.5),
        ("one_view_singleton", _randn(gen, 5, 1, 4), torch.tensor([0, 0, 1, 1, 2]), 0.2),
        ("three_views", _randn(gen, 3, 3, 4), torch.tensor([1, 0, 1]), 1.0),
        ("tiny_temperature", _randn(gen, 4, 2, 3), torch.tensor([0, 1, 0, 1]), 1e-3),
    ]
    return [
        SampleInput((_cast(f, dtype, device), y.to(device)), {"temperature": tau}, name)
        for name, f, y, tau in cases
    ]


def _supcon_errors() -> list[ErrorInput]:
    f = torch.randn(4, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    return [
        ErrorInput(SampleInput((f, y[:3])), ValueError, "labels must be a 1-D tensor of length 4"),
        ErrorInput(SampleInput((f, y.double())), ValueError, "labels must have an integer dtype"),
        ErrorInput(SampleInput((f[:, 0], y)), ValueError, "3-D tensor"),
        ErrorInput(SampleInput((f[:, :0], y)), ValueError, "V >= 1"),
        ErrorInput(
            SampleInput((f[:, :1], torch.arange(4))), ValueError, "no anchor has a positive"
        ),
        ErrorInput(SampleInput((f, y), {"variant": "mean"}), ValueError, "variant must be one of"),
        ErrorInput(
            SampleInput((f, y), {"temperature": 0.0}),
            ValueError,
            "temperature must be finite and > 0",
        ),
    ]


def _barlow_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(5)
    z = _randn(gen, 8, 4)
    cases = [
        ("random", z, _randn(gen, 8, 4), {}),
        ("near_duplicate", z, z + 0.05 * _randn(gen, 8, 4), {"lambda_offdiag": 0.1}),
        ("minimal", _randn(gen, 2, 3), _randn(gen, 2, 3), {}),
        ("unbiased", z, _randn(gen, 8, 4), {"variance": "unbiased"}),
    ]
    return [
        SampleInput((_cast(a, dtype, device), _cast(b, dtype, device)), kw, name)
        for name, a, b, kw in cases
    ]


def _barlow_errors() -> list[ErrorInput]:
    z = torch.randn(4, 3, dtype=torch.float64)
    return [
        ErrorInput(
            SampleInput((z, z), {"lambda_offdiag": -1.0}),
            ValueError,
            "lambda_offdiag must be finite and >= 0",
        ),
        ErrorInput(SampleInput((z[:1], z[:1])), ValueError, "at least 2 rows"),
        ErrorInput(SampleInput((z, z[:, :2])), ValueError, "same shape"),
        ErrorInput(SampleInput((z, z), {"eps": -1e-5}), ValueError, "eps must be finite and >= 0"),
        ErrorInput(
            SampleInput((z, z), {"variance": "sample"}), ValueError, "variance must be one of"
        ),
    ]


def _hard_k(n: int) -> dict[str, Any]:
    return {"k": n - 1}  # half of the 2N - 2 negatives


# --- the entries ---------------------------------------------------------------------------

_TWO_VIEW_PROPERTIES = ("value", "hardness", "limits", "invariance", "gradcheck", "stability")
# Normalisation is discontinuous at the zero vector: finite differences across it are
# meaningless, so only finiteness (and the zero-gradient convention) is tested there.
_ZERO_ROW = (
    Override("gradcheck", "normalisation is discontinuous at a zero row", sample="zero_row"),
)

register(
    LossSpec(
        name="nt_xent",
        fn=losses.nt_xent,
        citation="Chen et al. 2020 (SimCLR) Eq. 1; Wang & Liu 2021 Eq. 1",
        conventions="2N anchors, cosine similarity, positive in the denominator, mean",
        inputs=("z1", "z2"),
        strategy=ams.two_view_samples,
        sample_inputs=_two_view_samples(),
        error_inputs=_two_view_errors(losses.nt_xent),
        tolerances=DEFAULT_TOLERANCES,
        properties=(*_TWO_VIEW_PROPERTIES, "reduction"),
        overrides=_ZERO_ROW,
    )
)

register(
    LossSpec(
        name="nt_xent_decoupled",
        fn=losses.nt_xent,
        citation="AMCL (Wang et al. 2024) Table 1; Yeh et al. 2022 (DCL)",
        conventions="as nt_xent with the positive removed from the denominator",
        inputs=("z1", "z2"),
        fixed_kwargs={"decoupled": True},
        strategy=ams.two_view_samples,
        sample_inputs=_two_view_samples(),
        error_inputs=_two_view_errors(losses.nt_xent),
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "invariance", "gradcheck", "stability"),
        overrides=_ZERO_ROW,
    )
)

register(
    LossSpec(
        name="info_nce",
        fn=losses.info_nce,
        citation="He et al. 2020 (MoCo) Eq. 1",
        conventions="N queries, candidates = own key + queue, cosine similarity, mean",
        inputs=("query", "key", "queue"),
        strategy=ams.query_key_queue_samples,
        sample_inputs=_info_nce_samples,
        error_inputs=_info_nce_errors,
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "hardness", "limits", "invariance", "gradcheck", "stability"),
    )
)

register(
    LossSpec(
        name="supcon",
        fn=losses.supcon,
        citation="Khosla et al. 2020 Eq. 2 (L_out)",
        conventions="(N, V, D) features, all V*N anchors, mean over anchors with a positive",
        inputs=("features", "labels"),
        strategy=ams.supcon_samples,
        sample_inputs=_supcon_samples,
        error_inputs=_supcon_errors,
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "invariance", "reduction", "gradcheck", "stability"),
    )
)

register(
    LossSpec(
        name="supcon_in",
        fn=losses.supcon,
        citation="Khosla et al. 2020 Eq. 3 (L_in)",
        conventions="as supcon with the positive average inside the log",
        inputs=("features", "labels"),
        fixed_kwargs={"variant": "in"},
        strategy=ams.supcon_samples,
        sample_inputs=_supcon_samples,
        error_inputs=_supcon_errors,
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "invariance", "gradcheck", "stability"),
    )
)

register(
    LossSpec(
        name="barlow_twins",
        fn=losses.barlow_twins,
        citation="Zbontar et al. 2021 Eq. 1",
        conventions="per-view standardisation (biased var, eps 1e-5), C = Z1^T Z2 / N",
        inputs=("z1", "z2"),
        strategy=ams.barlow_samples,
        sample_inputs=_barlow_samples,
        error_inputs=_barlow_errors,
        tolerances=BARLOW_TOLERANCES,
        properties=("value", "reduction", "gradcheck"),
    )
)

register(
    LossSpec(
        name="hard_contrastive",
        fn=losses.hard_contrastive,
        citation="Wang & Liu 2021 Eq. 9",
        conventions="as nt_xent, denominator keeps the k hardest negatives (ties kept)",
        inputs=("z1", "z2"),
        strategy=ams.hard_negative_samples,
        sample_inputs=_two_view_samples(_hard_k),
        error_inputs=lambda: [*_two_view_errors(losses.hard_contrastive)(), *_hard_errors()],
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "hardness", "invariance", "gradcheck", "stability"),
        overrides=_ZERO_ROW,
    )
)

register(
    LossSpec(
        name="simple_contrastive",
        fn=losses.simple_contrastive,
        citation="Wang & Liu 2021 Eq. 3",
        conventions="-s_pos + lambda * sum of negative similarities; lambda = 1/#negatives",
        inputs=("z1", "z2"),
        strategy=lambda **kw: ams.hard_negative_samples(temperature=False, **kw),
        sample_inputs=_two_view_samples(temperature=False),
        error_inputs=_two_view_errors(losses.simple_contrastive, temperature=False),
        tolerances={
            dt: Tolerance(t.rtol, t.atol, inverse_temperature=False)
            for dt, t in DEFAULT_TOLERANCES.items()
        },
        properties=("value", "invariance", "gradcheck", "stability"),
        overrides=_ZERO_ROW,
    )
)


# --- AMCL (issue 3) ---
# Inputs are head stacks (C, N, D) plus a per-pair temperature tensor laid out like the
# similarities it divides (see each function); hyperparameters are keywords.  The
# temperature is a positional tensor, so the generic tests differentiate through it too.

# The zero row makes every similarity of its anchor an exact tie (selection by lowest index) and
# normalisation discontinuous; a finite-difference step of 1e-6 is not small against
# tau = 1e-5.  Those samples are checked analytically instead (the exact-gradient and
# finiteness tests of tests/properties/test_amcl.py).
_AMCL_OVERRIDES = (
    Override("gradcheck", "normalisation is discontinuous at a zero row", sample="zero_row"),
    *(
        Override("gradcheck", "a 1e-6 finite-difference step is 10% of tau=1e-5", sample=name)
        for name in ("tau_floor", "log_sum_exp_tau_floor")
    ),
    *(
        Override(
            "precision",
            "the temperature gradient (~1/tau^2) overflows float16 below tau ~ 4e-3 (use fp32)",
            sample=name,
            dtype=torch.float16,
        )
        for name in ("tiny_temperature", "tau_floor", "log_sum_exp_tau_floor")
    ),
)
# The loss has no scalar temperature to scale the absolute tolerance; the samples keep
# similarity gaps and temperatures in a range where these bounds hold (tau_floor included).
AMCL_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-9, inverse_temperature=False),
    torch.float32: Tolerance(rtol=1e-4, atol=1e-3, inverse_temperature=False),
    torch.float16: Tolerance(rtol=2e-3, atol=1e-3, inverse_temperature=False),
    torch.bfloat16: Tolerance(rtol=2e-2, atol=1e-2, inverse_temperature=False),
}


def _log_uniform_tau(
    gen: torch.Generator, shape: tuple[int, ...], low: float, high: float
) -> Tensor:
    log_low, log_high = torch.tensor([low, high], dtype=torch.float64).log()
    u = torch.rand(*shape, generator=gen, dtype=torch.float64)
    return torch.exp(log_low + u * (log_high - log_low))


def _amcl_two_view_cases() -> list[tuple[str, Tensor, Tensor, Tensor, dict[str, Any]]]:
    """Named (z1, z2, temperature, kwargs) cases; temperatures are (C, 2N, 2N)."""
    gen = torch.Generator().manual_seed(3)
    z1 = _randn(gen, 3, 4, 5)
    z2 = z1 + 0.5 * _randn(gen, 3, 4, 5)
    tau = _log_uniform_tau(gen, (3, 8, 8), 0.05, 2.0)
    zero_row = z1.clone()
    zero_row[1, 2] = 0.0
    small = _randn(gen, 1, 2, 2)
    return [
        ("random", z1, z2, tau, {"beta": 1e-2}),
        ("topk", z1, z2, tau, {"beta": 1e-2, "mode": "topk", "k": 3}),
        (
            "topk_release2",
            z1,
            z2,
            tau,
            {"beta": 0.1, "mode": "topk", "k": 6, "neg_regularizer": "release2"},
        ),
        ("near_duplicate", z1, z1 + 1e-2 * _randn(gen, 3, 4, 5), tau, {"beta": 1.0}),
        ("per_head_temperature", z1, z2, torch.tensor([0.2, 0.5, 1.0])[:, None, None], {}),
        ("zero_row", zero_row, z2, tau, {"beta": 1e-2}),
        (
            "minimal",
            small,
            small + _randn(gen, 1, 2, 2),
            _log_uniform_tau(gen, (1, 4, 4), 0.1, 1.0),
            {},
        ),
        ("tiny_temperature", z1, z2, _log_uniform_tau(gen, (3, 8, 8), 1e-3, 1e-2), {"beta": 1e-4}),
        ("tau_floor", z1, z2, _log_uniform_tau(gen, (3, 8, 8), 1e-5, 2e-5), {"beta": 1e-4}),
        # the log-sum-exp modes (Fig. 5, right); "nt_xent_mode" is not one of amcl_info_nce's
        ("softmax", z1, z2, tau, {"beta": 1e-2, "mode": "softmax"}),
        ("nt_xent_mode", z1, z2, tau, {"beta": 1e-2, "mode": "nt_xent"}),
        (
            "log_sum_exp_tau_floor",
            z1,
            z2,
            _log_uniform_tau(gen, (3, 8, 8), 1e-5, 2e-5),
            {"beta": 1e-4, "mode": "softmax"},
        ),
    ]


def _amcl_two_view_samples(
    *, positive_is_candidate: bool = False
) -> Callable[[torch.dtype, torch.device], list[SampleInput]]:
    """The named cases; without ``mode="nt_xent"`` when the positive is a candidate."""

    def make(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
        return [
            SampleInput(tuple(_cast(t, dtype, device) for t in (a, b, tau)), kw, name)
            for name, a, b, tau, kw in _amcl_two_view_cases()
            if not (positive_is_candidate and kw.get("mode") == "nt_xent")
        ]

    return make


def _amcl_log_sum_exp_modes(
    base: Callable[..., st.SearchStrategy[SampleInput]], modes: tuple[str, ...]
) -> Callable[..., st.SearchStrategy[SampleInput]]:
    """``base``'s samples (max and top-kappa) or, as often, a max-mode sample of ``base`` moved
    to one of the log-sum-exp ``modes`` (no ``k``, the Omega regulariser)."""

    def move(drawn: tuple[SampleInput, str]) -> SampleInput:
        sample, mode = drawn
        kwargs = {key: value for key, value in sample.kwargs.items() if key != "k"}
        kwargs.update(mode=mode, neg_regularizer="omega")
        return SampleInput(sample.args, kwargs, sample.name)

    def strategy(**kwargs: Any) -> st.SearchStrategy[SampleInput]:
        moved = st.tuples(base(modes=("max",), **kwargs), st.sampled_from(modes)).map(move)
        return st.one_of(base(**kwargs), moved)

    return strategy


def _amcl_two_view_errors(
    fn: Callable[..., Tensor], candidates: int, *, positive_is_candidate: bool = False
) -> Callable[[], list[ErrorInput]]:
    def make() -> list[ErrorInput]:
        z = torch.randn(3, 4, 5, dtype=torch.float64)
        tau = torch.full((3, 8, 8), 0.5, dtype=torch.float64)
        nan = z.clone()
        nan[0, 1, 2] = float("nan")
        bad_tau = tau.clone()
        bad_tau[1, 2, 3] = 0.0
        cases = [
            (
                (z, z, tau[:2]),
                {},
                "temperature_heads",
                "temperature has 2 heads but the features have 3",
            ),
            ((z, z[:2], tau), {}, "view_heads", "z1 has 3 heads but z2 has 2"),
            ((z, z[:, :3], tau), {}, "batch_mismatch", "same batch size"),
            ((z, z, tau[:, :4]), {}, "temperature_shape", "broadcastable to \\(3, 8, 8\\)"),
            ((z, z, bad_tau), {}, "zero_temperature", "must be > 0 everywhere"),
            ((z, z, -1.0), {}, "negative_temperature", "temperature must be finite and > 0"),
            (
                (z, z, tau),
                {"mode": "topk", "k": candidates + 1},
                "k_too_large",
                f"k must be in \\[1, {candidates}\\]",
            ),
            ((z, z, tau), {"mode": "topk"}, "topk_without_k", "mode='topk' needs k"),
            ((z, z, tau), {"k": 2}, "k_with_max", "k is only used with mode='topk'"),
            (
                (z, z, tau),
                {"mode": "softmax", "k": 2},
                "k_with_softmax",
                "k is only used with mode='topk', got k=2 with mode='softmax'",
            ),
            (
                (z, z, tau),
                {"mode": "softmax", "neg_regularizer": "release2"},
                "release2_with_softmax",
                "neg_regularizer='release2' .* only defined for mode='max' or 'topk'",
            ),
            ((z, z, tau), {"mode": "mean"}, "bad_mode", "mode must be one of"),
            (
                (z, z, tau),
                {"neg_regularizer": "sum"},
                "bad_regularizer",
                "neg_regularizer must be one of",
            ),
            ((z, z, tau), {"beta": -1.0}, "negative_beta", "beta must be finite and >= 0"),
            ((z, nan, tau), {}, "nan", "NaN or inf"),
            ((z[0], z[0], tau), {}, "two_dimensional", "3-D tensor"),
            ((z[:, :1], z[:, :1], tau), {}, "batch_of_one", "N >= 2"),
            ((z, z, tau), {"reduction": "avg"}, "bad_reduction", "reduction must be one of"),
        ]
        if positive_is_candidate:  # the positive is a candidate already
            cases.append(
                (
                    (z, z, tau),
                    {"mode": "nt_xent"},
                    "nt_xent_mode",
                    "mode='nt_xent' is not available",
                )
            )
        else:
            cases.append(
                (
                    (z, z, tau),
                    {"mode": "nt_xent", "neg_regularizer": "release2"},
                    "release2_with_nt_xent_mode",
                    "neg_regularizer='release2' .* only defined for mode='max' or 'topk'",
                )
            )
        return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]

    return make


def _amcl_moco_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(4)
    q = _randn(gen, 3, 3, 4)
    key = q + 0.5 * _randn(gen, 3, 3, 4)
    queue = _randn(gen, 3, 6, 4)
    tau = _log_uniform_tau(gen, (3, 3, 7), 0.05, 2.0)
    one = _randn(gen, 2, 1, 3)
    cases = [
        ("random", q, key, queue, tau, {"beta": 1e-2}),
        ("topk", q, key, queue, tau, {"beta": 1e-2, "mode": "topk", "k": 3}),
        (
            "topk_release2",
            q,
            key,
            queue,
            tau,
            {"beta": 0.1, "mode": "topk", "k": 6, "neg_regularizer": "release2"},
        ),
        (
            "single_query",
            one,
            one + _randn(gen, 2, 1, 3),
            _randn(gen, 2, 1, 3),
            _log_uniform_tau(gen, (2, 1, 2), 0.1, 1.0),
            {},
        ),
        (
            "constant_temperature",
            q,
            key,
            queue,
            torch.tensor(0.2, dtype=torch.float64),
            {"beta": 1.0},
        ),
        ("tau_floor", q, key, queue, _log_uniform_tau(gen, (3, 3, 7), 1e-5, 2e-5), {"beta": 1e-4}),
        ("softmax", q, key, queue, tau, {"beta": 1e-2, "mode": "softmax"}),
        ("nt_xent_mode", q, key, queue, tau, {"beta": 1e-2, "mode": "nt_xent"}),
        (
            "log_sum_exp_tau_floor",
            q,
            key,
            queue,
            _log_uniform_tau(gen, (3, 3, 7), 1e-5, 2e-5),
            {"beta": 1e-4, "mode": "nt_xent"},
        ),
    ]
    return [
        SampleInput(tuple(_cast(t, dtype, device) for t in ts), kw, name) for name, *ts, kw in cases
    ]


def _amcl_moco_errors() -> list[ErrorInput]:
    q = torch.randn(3, 2, 4, dtype=torch.float64)
    queue = torch.randn(3, 5, 4, dtype=torch.float64)
    tau = torch.full((3, 2, 6), 0.5, dtype=torch.float64)
    cases = [
        ((q, q, queue[:, :, :3], tau), {}, "queue_dim", "queue must be a \\(C, K, D\\)"),
        ((q, q, queue[:2], tau), {}, "queue_heads", "queue must be a \\(C, K, D\\)"),
        ((q, q, queue, tau[..., :5]), {}, "temperature_shape", "broadcastable to \\(3, 2, 6\\)"),
        ((q, q, queue, tau), {"mode": "topk", "k": 6}, "k_too_large", "k must be in \\[1, 5\\]"),
        ((q, q[:2], queue, tau), {}, "key_heads", "query has 3 heads but key has 2"),
        ((q, q, queue, tau), {"beta": float("nan")}, "nan_beta", "beta must be finite"),
        ((q, q, queue, tau), {"mode": "nt_xent", "k": 1}, "k_with_nt_xent_mode", "k is only used"),
        (
            (q, q, queue, tau),
            {"mode": "softmax", "neg_regularizer": "release2"},
            "release2_with_softmax",
            "neg_regularizer='release2' .* only defined for mode='max' or 'topk'",
        ),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


def _amcl_simsiam_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(5)
    p1, p2, h1, h2 = _randn(gen, 4, 2, 5, 6)
    cases = [
        ("random", (p1, p2, h1, h2, _log_uniform_tau(gen, (2, 2, 5), 0.05, 2.0)), {"beta": 1e-2}),
        (
            "unit_temperature",
            (p1, p2, h1, h2, torch.ones(1, 1, 1, dtype=torch.float64)),
            {"beta": 1.0},
        ),
        (
            "single_sample",
            (*_randn(gen, 4, 1, 1, 3), torch.tensor(0.3, dtype=torch.float64)),
            {},
        ),
        (
            "tau_floor",
            (p1, p2, h1, h2, _log_uniform_tau(gen, (2, 2, 5), 1e-5, 2e-5)),
            {"beta": 1e-4},
        ),
    ]
    return [
        SampleInput(tuple(_cast(t, dtype, device) for t in ts), kw, name) for name, ts, kw in cases
    ]


def _amcl_simsiam_errors() -> list[ErrorInput]:
    p = torch.randn(2, 3, 4, dtype=torch.float64)
    tau = torch.full((2, 2, 3), 0.5, dtype=torch.float64)
    cases = [
        ((p, p, p, p[:, :2], tau), {}, "batch_mismatch", "same batch size"),
        ((p, p, p, p, tau[:, :1, :2]), {}, "temperature_shape", "broadcastable to \\(2, 2, 3\\)"),
        ((p, p, p[:1], p, tau), {}, "heads", "p1 has 2 heads but h1 has 1"),
        ((p, p, p, p, tau), {"beta": -0.1}, "negative_beta", "beta must be finite and >= 0"),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


def _amcl_barlow_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(6)
    z = _randn(gen, 2, 8, 4)
    tau = _log_uniform_tau(gen, (2, 4, 4), 0.05, 2.0)
    cases = [
        ("random", z, _randn(gen, 2, 8, 4), tau, {"beta": 1e-2}),
        ("near_duplicate", z, z + 0.05 * _randn(gen, 2, 8, 4), tau, {"lambda_offdiag": 0.1}),
        ("batch_omega", z, _randn(gen, 2, 8, 4), tau, {"beta": 1e-2, "omega_dim": "batch"}),
        (
            "minimal",
            _randn(gen, 1, 2, 1),
            _randn(gen, 1, 2, 1),
            torch.tensor(0.7, dtype=torch.float64),
            {},
        ),
        (
            "tau_floor",
            z,
            _randn(gen, 2, 8, 4),
            _log_uniform_tau(gen, (2, 4, 4), 1e-5, 2e-5),
            {"beta": 1e-6},
        ),
    ]
    return [
        SampleInput(tuple(_cast(t, dtype, device) for t in (a, b, t_)), kw, name)
        for name, a, b, t_, kw in cases
    ]


def _amcl_barlow_errors() -> list[ErrorInput]:
    z = torch.randn(2, 6, 3, dtype=torch.float64)
    tau = torch.full((2, 3, 3), 0.5, dtype=torch.float64)
    cases = [
        ((z, z[:, :4], tau), {}, "batch_mismatch", "same batch size N"),
        ((z, z, tau[:, :2]), {}, "temperature_shape", "broadcastable to \\(2, 3, 3\\)"),
        ((z, z, tau), {"omega_dim": "width"}, "bad_omega_dim", "omega_dim must be one of"),
        ((z, z, tau), {"lambda_offdiag": -1.0}, "negative_lambda", "lambda_offdiag must be finite"),
        ((z[:, :1], z[:, :1], tau), {}, "batch_of_one", "N >= 2"),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


_AMCL_CITATION = "Wang et al. 2024 (AMCL) Table 2 Eq. {}"
# mode="softmax" / "nt_xent": the paper's "Softmax" variant (Fig. 5, right)
_AMCL_LSE = "; Fig. 5 (right) for the log-sum-exp modes"

register(
    LossSpec(
        name="amcl_nt_xent",
        fn=losses.amcl_nt_xent,
        citation=_AMCL_CITATION.format("2.1") + _AMCL_LSE,
        conventions="(C, N, D) head stacks, (C, 2N, 2N) pair temperatures, hardest negative by "
        "raw similarity (or all in a log-sum-exp, mode='softmax'/'nt_xent'), heads summed, "
        "mean over 2N anchors",
        inputs=("z1", "z2", "temperature"),
        strategy=_amcl_log_sum_exp_modes(ams.amcl_two_view_samples, ("softmax", "nt_xent")),
        sample_inputs=_amcl_two_view_samples(),
        error_inputs=_amcl_two_view_errors(losses.amcl_nt_xent, 6),
        tolerances=AMCL_TOLERANCES,
        properties=("value", "invariance", "reduction", "gradcheck"),
        overrides=_AMCL_OVERRIDES,
    )
)

register(
    LossSpec(
        name="amcl_info_nce",
        fn=losses.amcl_info_nce,
        citation=_AMCL_CITATION.format("2.4") + _AMCL_LSE,
        conventions="as amcl_nt_xent with the positive also a candidate for the hardest "
        "(mode='nt_xent' rejected)",
        inputs=("z1", "z2", "temperature"),
        strategy=_amcl_log_sum_exp_modes(
            lambda **kw: ams.amcl_two_view_samples(positive_is_candidate=True, **kw), ("softmax",)
        ),
        sample_inputs=_amcl_two_view_samples(positive_is_candidate=True),
        error_inputs=_amcl_two_view_errors(losses.amcl_info_nce, 7, positive_is_candidate=True),
        tolerances=AMCL_TOLERANCES,
        properties=("value", "invariance", "reduction", "gradcheck"),
        overrides=_AMCL_OVERRIDES,
    )
)

register(
    LossSpec(
        name="amcl_moco",
        fn=losses.amcl_moco,
        citation=_AMCL_CITATION.format("2.1") + " with a queue" + _AMCL_LSE,
        conventions="query/key (C, N, D), per-head queue (C, K, D), temperatures (C, N, 1 + K) "
        "with the key in column 0, heads summed, mean over N queries",
        inputs=("query", "key", "queue", "temperature"),
        strategy=_amcl_log_sum_exp_modes(ams.amcl_queue_samples, ("softmax", "nt_xent")),
        sample_inputs=_amcl_moco_samples,
        error_inputs=_amcl_moco_errors,
        tolerances=AMCL_TOLERANCES,
        properties=("value", "invariance", "reduction", "gradcheck"),
        overrides=_AMCL_OVERRIDES,
    )
)

register(
    LossSpec(
        name="amcl_simsiam",
        fn=losses.amcl_simsiam,
        citation=_AMCL_CITATION.format("2.2"),
        conventions="predictions/targets (C, N, D), temperatures (C, 2, N); registered without "
        "the stop-gradient (same value) so that gradcheck sees the full derivative",
        inputs=("p1", "p2", "h1", "h2", "temperature"),
        fixed_kwargs={"stop_gradient": False},
        strategy=ams.amcl_simsiam_samples,
        sample_inputs=_amcl_simsiam_samples,
        error_inputs=_amcl_simsiam_errors,
        tolerances=AMCL_TOLERANCES,
        properties=("value", "reduction", "gradcheck"),
        overrides=_AMCL_OVERRIDES,
    )
)

register(
    LossSpec(
        name="amcl_barlow_twins",
        fn=losses.amcl_barlow_twins,
        citation=_AMCL_CITATION.format("2.3"),
        conventions="(C, N, D) head stacks, (C, D, D) temperatures (diagonal = positive role), "
        "Omega with d' = D, heads summed",
        inputs=("z1", "z2", "temperature"),
        strategy=ams.amcl_barlow_samples,
        sample_inputs=_amcl_barlow_samples,
        error_inputs=_amcl_barlow_errors,
        tolerances=AMCL_TOLERANCES,
        properties=("value", "reduction", "gradcheck"),
        overrides=_AMCL_OVERRIDES,
    )
)


# --- kernel losses (issue 5) ---
# The idealized kernel loss takes (features, kernel, marginal) on a finite augmentation graph;
# the invariance + orthogonality loss and multi-view Barlow Twins take (N, m, D) views.
# Their identities ((K1)-(K2) of amcl_lab.losses.kernel, m = 2 reductions, rotation
# invariance) are checked in tests/properties/test_kernel.py against NumPy float64 formulas.

PROPERTIES.update(
    {
        "rotation": "invariant to one orthogonal map of the feature space (F -> FQ)",
        "equivalence": "kernel loss = const + 2c (invariance + beta orthogonality), beta = 1/(2c)",
    }
)

KERNEL_TOLERANCES: dict[torch.dtype, Tolerance] = {
    dt: Tolerance(t.rtol, t.atol, inverse_temperature=False) for dt, t in DEFAULT_TOLERANCES.items()
}


def _graph_cases() -> list[tuple[str, Tensor, Tensor, Tensor, dict[str, Any]]]:
    # imported here so that importing the registry does not load the data package
    from .data.synthetic import random_augmentation_graph

    gen = torch.Generator().manual_seed(55)
    graph = random_augmentation_graph(4, 6, generator=gen)
    one = random_augmentation_graph(1, 1, generator=gen)
    k, p = graph.kernel, graph.marginal
    return [
        ("random", _randn(gen, 6, 3), k, p, {}),
        ("c_half", _randn(gen, 6, 2), k, p, {"c": 0.5}),
        ("c_two", _randn(gen, 6, 4), k, p, {"c": 2.0}),
        ("optimum", graph.optimal_features(2), k, p, {}),
        ("zero_features", torch.zeros(6, 2, dtype=torch.float64), k, p, {"c": 0.0}),
        ("single_point", _randn(gen, 1, 1), one.kernel, one.marginal, {}),
    ]


def _kernel_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    return [
        SampleInput(tuple(_cast(t, dtype, device) for t in (f, k, p)), kw, name)
        for name, f, k, p, kw in _graph_cases()
    ]


def _kernel_errors() -> list[ErrorInput]:
    _, f, k, p, _ = _graph_cases()[0]
    skew = k.clone()
    skew[0, 1] += 0.5
    unnormalised = 2.0 * p
    negative = p.clone()
    negative[0], negative[1] = -negative[0], negative[1] + 2.0 * negative[0]
    cases = [
        ((f, skew, p), {}, "asymmetric_kernel", "kernel must be symmetric"),
        ((f, k[:5, :5], p), {}, "kernel_wrong_size", r"kernel must have shape \(6, 6\)"),
        ((f, k[0], p), {}, "kernel_one_dimensional", "kernel must be a 2-D tensor"),
        ((f[:5], k, p), {}, "features_wrong_rows", r"kernel must have shape \(5, 5\)"),
        ((f, k, p[:5]), {}, "marginal_wrong_size", r"marginal must have shape \(6,\)"),
        ((f, k, unnormalised), {}, "marginal_not_normalised", "marginal must sum to 1"),
        ((f, k, negative), {}, "marginal_negative", "marginal must be non-negative"),
        ((f[:, :0], k, p), {}, "projector_dim_zero", "feature dimension >= 1"),
        ((f, k, p), {"c": -0.5}, "negative_c", "c must be finite and >= 0"),
        ((f * float("nan"), k, p), {}, "nan", "NaN or inf"),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


def _views_cases() -> list[tuple[str, Tensor]]:
    gen = torch.Generator().manual_seed(56)
    images = _randn(gen, 5, 1, 3)
    return [
        ("two_views", images + 0.3 * _randn(gen, 5, 2, 3)),
        ("four_views", images + 0.3 * _randn(gen, 5, 4, 3)),
        ("identical_views", images.expand(5, 3, 3).clone()),
        ("minimal", _randn(gen, 2, 2, 1)),
    ]


def _views_samples(
    kwargs: Mapping[str, Mapping[str, Any]],
) -> Callable[[torch.dtype, torch.device], list[SampleInput]]:
    def make(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
        return [
            SampleInput((_cast(z, dtype, device),), dict(kwargs[name]), name)
            for name, z in _views_cases()
        ]

    return make


def _views_errors(scalar: str, extra: list[tuple[tuple, dict, str, str]]) -> list[ErrorInput]:
    """Bad ``(N, m, D)`` views common to both losses, a negative ``scalar``, plus ``extra``."""
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    cases = [
        ((z[:, :1],), {}, "one_view", "m >= 2 views"),
        ((z[:, 0],), {}, "two_dimensional", "views must be a 3-D tensor"),
        ((z[..., :0],), {}, "projector_dim_zero", "feature dimension >= 1"),
        ((z,), {scalar: -0.1}, f"negative_{scalar}", f"{scalar} must be finite and >= 0"),
        ((z * float("inf"),), {}, "inf", "NaN or inf"),
        *extra,
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


def _invariance_orthogonality_errors() -> list[ErrorInput]:
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    w = torch.full((4, 3), 1.0 / 12, dtype=torch.float64)
    return _views_errors(
        "beta",
        [
            ((z,), {"weights": w[:, :2] * 1.5}, "weights_shape", r"weights must have shape"),
            ((z,), {"weights": 2.0 * w}, "weights_not_normalised", "weights must sum to 1"),
        ],
    )


def _multiview_barlow_errors() -> list[ErrorInput]:
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    return _views_errors(
        "lambda_offdiag",
        [
            ((z[:1],), {}, "one_image", "at least 2 rows"),
            ((z,), {"standardize": "batch"}, "bad_standardize", "standardize must be one of"),
            ((z,), {"eps": -1.0}, "negative_eps", "eps must be finite and >= 0"),
        ],
    )


register(
    LossSpec(
        name="kernel_loss",
        fn=losses.kernel_loss,
        citation="Agrawal et al. 2024 (arXiv:2312.10725) idealized loss; losses.kernel (K1)-(K2)",
        conventions="HS norm in L2(p) on M points, T_c = (1-c)I + cT, no normalisation by M or d",
        inputs=("features", "kernel", "marginal"),
        strategy=ams.kernel_samples,
        sample_inputs=_kernel_samples,
        error_inputs=_kernel_errors,
        tolerances=KERNEL_TOLERANCES,
        properties=("rotation", "equivalence"),
        # finite differences of the kernel or marginal leave the domain (symmetric, summing to
        # 1); tests/kernel checks gradcheck through a domain-preserving parametrisation.
        overrides=(Override("gradcheck", "a kernel/marginal step leaves the validated domain"),),
    )
)

register(
    LossSpec(
        name="invariance_orthogonality",
        fn=losses.invariance_orthogonality_loss,
        citation="Agrawal et al. 2024 (arXiv:2312.10725) reformulated loss; losses.kernel (K2)",
        conventions="(N, m, D) views, unbiased within-image variance + beta sum (G - I)^2",
        inputs=("views",),
        strategy=ams.invariance_orthogonality_samples,
        sample_inputs=_views_samples(
            {
                "two_views": {"beta": 0.5},
                "four_views": {"beta": 0.01},
                "identical_views": {"beta": 2.0},
                "minimal": {"beta": 0.0},
            }
        ),
        error_inputs=_invariance_orthogonality_errors,
        tolerances=KERNEL_TOLERANCES,
        properties=("rotation", "equivalence", "reduction", "gradcheck", "stability"),
    )
)

register(
    LossSpec(
        name="multiview_barlow_twins",
        fn=losses.multiview_barlow_twins,
        citation="Agrawal et al. 2024 multi-view BT (fastssl v3); Zbontar et al. 2021 Eq. 1",
        conventions="(N, m, D) views, each vs the view mean; m = 2 is barlow_twins; per-view std",
        inputs=("views",),
        strategy=ams.multiview_barlow_samples,
        sample_inputs=_views_samples(
            {
                "two_views": {},
                "four_views": {"lambda_offdiag": 0.1},
                "identical_views": {"standardize": "joint", "normalize": True},
                "minimal": {"variance": "unbiased"},
            }
        ),
        error_inputs=_multiview_barlow_errors,
        tolerances=BARLOW_TOLERANCES,
        properties=("reduction", "gradcheck", "stability"),
    )
)


# --- self-supervised losses (VICReg, BYOL/SimSiam, DCL, MoCo v3, DINO, SwAV) -----------------
# Statements of these papers that tests/properties checks (test_vicreg.py, test_byol.py,
# test_dcl.py, test_moco_v3.py, test_dino.py, test_swav.py), each with a mutant battery.  The
# stop-gradients of BYOL/SimSiam (targets), DCLW (weights), MoCo v3 (keys), DINO (teacher and
# centre) and SwAV (codes) change the gradient, not the value: the entries are registered
# with ``stop_gradient=False`` so that gradcheck sees the full derivative (the engine and the
# peers use the detached losses).

PROPERTIES.update(
    {
        "hinge": "VICReg's variance term is zero iff every dimension's sqrt(Var + eps) >= gamma",
        "bounded": "lies in its stated range; the minimum exactly where predictions align",
        "decoupling": "DCL's gradient w.r.t. the positive similarity is -w/tau (no coupling)",
        "cross_entropy": "a cross-entropy: >= the target entropy, equal iff prediction = target",
        "marginals": "Sinkhorn codes: unit mass per sample, N/K per prototype at convergence",
        "identity": "equals another formula exactly (stated per loss)",
    }
)

SSL_TOLERANCES: dict[torch.dtype, Tolerance] = {
    dt: Tolerance(t.rtol, t.atol, inverse_temperature=False) for dt, t in DEFAULT_TOLERANCES.items()
}
_SG = {"stop_gradient": False}


def _vicreg_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(21)
    z = _randn(gen, 8, 4)
    cases = [
        ("random", z, z + 0.3 * _randn(gen, 8, 4), {}),
        (
            "collapsed",
            torch.ones(6, 3, dtype=torch.float64),
            torch.ones(6, 3, dtype=torch.float64),
            {},
        ),
        ("wide", 3.0 * z, 3.0 * z + _randn(gen, 8, 4), {}),
        (
            "near_duplicate",
            z,
            z + 1e-3 * _randn(gen, 8, 4),
            {"lambda_invariance": 1.0, "mu_variance": 0.0, "nu_covariance": 0.04},
        ),
        ("gamma_two", z, _randn(gen, 8, 4), {"gamma": 2.0, "eps": 1e-6}),
        ("minimal", _randn(gen, 2, 1), _randn(gen, 2, 1), {}),
    ]
    return [
        SampleInput((_cast(a, dtype, device), _cast(b, dtype, device)), kw, name)
        for name, a, b, kw in cases
    ]


def _vicreg_errors() -> list[ErrorInput]:
    z = torch.randn(4, 3, dtype=torch.float64)
    nan = z.clone()
    nan[0, 0] = float("nan")
    cases = [
        ((z[:1], z[:1]), {}, "batch_of_one", "at least 2 rows"),
        ((z, z[:, :2]), {}, "shape_mismatch", "same shape"),
        ((z[0], z[0]), {}, "one_dimensional", "z1 must be a 2-D tensor"),
        ((z, nan), {}, "nan", "z2 contains NaN or inf"),
        ((z.long(), z.long()), {}, "integer_dtype", "floating dtype"),
        ((z, z), {"lambda_invariance": -1.0}, "negative_lambda", "lambda_invariance must be"),
        ((z, z), {"mu_variance": float("inf")}, "inf_mu", "mu_variance must be finite"),
        ((z, z), {"nu_covariance": -0.5}, "negative_nu", "nu_covariance must be finite"),
        ((z, z), {"gamma": -1.0}, "negative_gamma", "gamma must be finite and >= 0"),
        ((z, z), {"eps": -1e-4}, "negative_eps", "eps must be finite and >= 0"),
        (("z", z), {}, "not_a_tensor", "z1 must be a torch.Tensor"),
    ]
    return [
        ErrorInput(SampleInput(a, kw, name), TypeError if name == "not_a_tensor" else ValueError, m)
        for a, kw, name, m in cases
    ]


def _multiview_vicreg_errors() -> list[ErrorInput]:
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    return _views_errors(
        "lambda_invariance",
        [
            ((z[:1],), {}, "one_image", "at least 2 rows"),
            ((z,), {"gamma": -1.0}, "negative_gamma", "gamma must be finite and >= 0"),
            ((z,), {"eps": float("nan")}, "nan_eps", "eps must be finite"),
        ],
    )


def _negative_cosine_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(22)
    p1, p2, z1, z2 = _randn(gen, 4, 5, 6)
    zero = p1.clone()
    zero[2] = 0.0
    cases = [
        ("random", (p1, p2, z1, z2), {}),
        ("random_byol", (p1, p2, z1, z2), {"convention": "byol"}),
        ("aligned", (2.0 * z2, 0.5 * z1, z1, z2), {}),
        ("antipodal", (-z2, -3.0 * z1, z1, z2), {"convention": "byol"}),
        ("zero_row", (zero, p2, z1, z2), {}),
        ("minimal", tuple(_randn(gen, 4, 1, 1)), {"reduction": "sum"}),
    ]
    return [
        SampleInput(tuple(_cast(t, dtype, device) for t in ts), kw, name) for name, ts, kw in cases
    ]


def _negative_cosine_errors() -> list[ErrorInput]:
    p = torch.randn(3, 4, dtype=torch.float64)
    nan = p.clone()
    nan[1, 1] = float("nan")
    cases = [
        ((p, p, p, p[:2]), {}, "batch_mismatch", "p1 and z2 must have the same shape"),
        ((p, p[:, :3], p, p), {}, "dim_mismatch", "p1 and p2 must have the same shape"),
        ((p, p, p[0], p), {}, "one_dimensional", "z1 must be a 2-D tensor"),
        ((p[:0], p[:0], p[:0], p[:0]), {}, "empty", "at least 1 rows"),
        ((p, p, nan, p), {}, "nan", "z1 contains NaN or inf"),
        ((p, p, p, p), {"convention": "l2"}, "bad_convention", "convention must be one of"),
        ((p, p, p, p), {"reduction": "avg"}, "bad_reduction", "reduction must be one of"),
        ((p, p, p, p), {"eps": 0.0}, "zero_eps", "eps must be finite and > 0"),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


def _dcl_errors(weighted: bool) -> Callable[[], list[ErrorInput]]:
    def make() -> list[ErrorInput]:
        z = torch.randn(4, 3, dtype=torch.float64)
        extra = [
            ErrorInput(
                SampleInput((z, z), {"temperature": 0.5, "weight": "uniform"}, "bad_weight"),
                ValueError,
                "weight must be one of",
            )
        ]
        if weighted:
            for bad in (0.0, -1.0, float("inf")):
                extra.append(
                    ErrorInput(
                        SampleInput((z, z), {"temperature": 0.5, "sigma": bad}, f"sigma={bad}"),
                        ValueError,
                        "sigma must be finite and > 0",
                    )
                )
        return [*_two_view_errors(losses.dcl)(), *extra]

    return make


def _moco_v3_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    out = []
    for name, a, b, tau in _two_view_cases():
        # q1's positive is k2 (a vs b), q2's is k1 (the same relation, rows reversed)
        q1, k2, q2, k1 = a, b, b.flip(0), a.flip(0)
        tensors = tuple(_cast(t, dtype, device) for t in (q1, q2, k1, k2))
        out.append(SampleInput(tensors, {"temperature": tau}, name))
    return out


def _moco_v3_errors() -> list[ErrorInput]:
    q = torch.randn(4, 3, dtype=torch.float64)
    nan = q.clone()
    nan[0, 1] = float("inf")
    cases = [
        ((q[:1], q[:1], q[:1], q[:1]), {}, "batch_of_one", "at least 2 rows"),
        ((q, q, q, q[:, :2]), {}, "shape_mismatch", "q1 and k2 must have the same shape"),
        ((q, q[:3], q, q), {}, "batch_mismatch", "q1 and q2 must have the same shape"),
        ((q, q, nan, q), {}, "inf", "k1 contains NaN or inf"),
        ((q, q, q, q), {"temperature": 0.0}, "zero_temperature", "temperature must be finite"),
        ((q, q, q, q), {"temperature": "0.2"}, "string_temperature", "temperature must be a"),
        ((q, q, q, q), {"eps": -1.0}, "negative_eps", "eps must be finite and > 0"),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


def _dino_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(23)
    student = _randn(gen, 4, 4, 5)
    teacher = _randn(gen, 4, 2, 5)
    center = 0.3 * _randn(gen, 5)
    zero = torch.zeros(5, dtype=torch.float64)
    equal = {"student_temperature": 0.5, "teacher_temperature": 0.5}
    cases = [
        ("random", (student, teacher, center), {}),
        ("zero_center", (student, teacher, zero), {}),
        ("equal_temperatures", (student, teacher, zero), equal),
        ("student_is_teacher", (teacher.flip(1), teacher, zero), equal),
        ("one_teacher_crop", (student[:, :2], teacher[:, :1], center), {}),
        ("sharp_teacher", (student, teacher, center), {"teacher_temperature": 0.02}),
        ("minimal", (_randn(gen, 1, 2, 1), _randn(gen, 1, 1, 1), _randn(gen, 1)), {}),
    ]
    return [
        SampleInput(tuple(_cast(t, dtype, device) for t in ts), kw, name) for name, ts, kw in cases
    ]


def _dino_errors() -> list[ErrorInput]:
    s = torch.randn(3, 4, 5, dtype=torch.float64)
    t = torch.randn(3, 2, 5, dtype=torch.float64)
    c = torch.zeros(5, dtype=torch.float64)
    nan = t.clone()
    nan[0, 0, 0] = float("nan")
    cases = [
        ((s[:, 0], t, c), {}, "two_dimensional", "student must be a 3-D tensor"),
        ((s[:, :1], t[:, :1], c), {}, "one_crop", "V_s >= 2 crops"),
        ((s, t[:2], c), {}, "batch_mismatch", r"teacher must have shape \(N, V_t, K\)"),
        ((s, t[..., :4], c), {}, "k_mismatch", r"teacher must have shape \(N, V_t, K\)"),
        ((s[:, :2], torch.randn(3, 3, 5, dtype=torch.float64), c), {}, "too_many", "V_t <= V_s"),
        ((s, t, c[:4]), {}, "center_shape", r"center must have shape \(5,\)"),
        ((s, t, c[None]), {}, "center_two_dimensional", "center must be a 1-D tensor"),
        ((s, nan, c), {}, "nan", "teacher contains NaN or inf"),
        ((s, t, c), {"student_temperature": 0.0}, "zero_student_t", "student_temperature must"),
        ((s, t, c), {"teacher_temperature": -1.0}, "negative_teacher_t", "teacher_temperature"),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


def _swav_samples(dtype: torch.dtype, device: torch.device) -> list[SampleInput]:
    gen = torch.Generator().manual_seed(24)
    features = torch.nn.functional.normalize(_randn(gen, 6, 3, 8), dim=-1)
    prototypes = torch.nn.functional.normalize(_randn(gen, 4, 8), dim=-1)
    scores = features @ prototypes.T  # (6, 3, 4) cosines
    cases = [
        ("random", scores, {}),
        ("two_crops", scores[:, :2], {"epsilon": 0.1}),
        ("one_assigned", scores, {"assigned": 1, "temperature": 0.5}),
        ("converged_codes", scores, {"epsilon": 0.5, "iterations": 50}),
        ("one_prototype", scores[..., :1], {}),
        ("one_sample", scores[:1], {"iterations": 1}),
    ]
    return [SampleInput((_cast(s, dtype, device),), kw, name) for name, s, kw in cases]


def _swav_errors() -> list[ErrorInput]:
    s = torch.randn(4, 3, 5, dtype=torch.float64)
    cases = [
        ((s[:, 0],), {}, "two_dimensional", "scores must be a 3-D tensor"),
        ((s[:, :1],), {}, "one_crop", "V >= 2 crops"),
        ((s[:0],), {}, "no_samples", "at least one sample"),
        ((s,), {"assigned": 0}, "assigned_zero", r"assigned must be in \[1, 3\]"),
        ((s,), {"assigned": 4}, "assigned_too_large", r"assigned must be in \[1, 3\]"),
        ((s,), {"epsilon": 0.0}, "zero_epsilon", "epsilon must be finite and > 0"),
        ((s,), {"iterations": 0}, "zero_iterations", "iterations must be >= 1"),
        ((s,), {"iterations": 2.5}, "float_iterations", "iterations must be an int"),
        ((s,), {"temperature": float("nan")}, "nan_temperature", "temperature must be finite"),
        ((s * float("nan"),), {}, "nan", "scores contains NaN or inf"),
    ]
    return [ErrorInput(SampleInput(a, kw, name), ValueError, m) for a, kw, name, m in cases]


register(
    LossSpec(
        name="vicreg",
        fn=losses.vicreg,
        citation="Bardes et al. 2022 (VICReg, arXiv:2105.04906) Eqs. 1-6",
        conventions="lambda MSE over N*D entries + mu mean of the two std hinges (unbiased var, "
        "eps 1e-4) + nu sum of off-diagonal cov^2 / D; 25, 25, 1",
        inputs=("z1", "z2"),
        strategy=ams.vicreg_samples,
        sample_inputs=_vicreg_samples,
        error_inputs=_vicreg_errors,
        tolerances=BARLOW_TOLERANCES,
        properties=("value", "hinge", "identity", "gradcheck", "stability"),
    )
)

register(
    LossSpec(
        name="multiview_vicreg",
        fn=losses.multiview_vicreg,
        citation="Agrawal et al. 2024 multi-view VICReg (fastssl); Bardes et al. 2022 Eqs. 1-6",
        conventions="(N, m, D) views, each vs the mean of the other views, averaged; "
        "m = 2 is vicreg",
        inputs=("views",),
        strategy=ams.multiview_vicreg_samples,
        sample_inputs=_views_samples(
            {
                "two_views": {},
                "four_views": {"nu_covariance": 0.1},
                "identical_views": {"gamma": 0.5},
                "minimal": {"mu_variance": 0.0},
            }
        ),
        error_inputs=_multiview_vicreg_errors,
        tolerances=BARLOW_TOLERANCES,
        properties=("value", "reduction", "gradcheck", "stability"),
    )
)

register(
    LossSpec(
        name="negative_cosine",
        fn=losses.negative_cosine,
        citation="Chen & He 2021 (SimSiam, arXiv:2011.10566) Eq. 2; Grill et al. 2020 (BYOL, "
        "arXiv:2006.07733) Eq. 2",
        conventions="(p1, p2, z1, z2), -cos(p1, z2)/2 - cos(p2, z1)/2 in [-1, 1] (convention="
        "'byol': 2 - 2cos summed, [0, 8]), mean over N; registered without the stop-gradient",
        inputs=("p1", "p2", "z1", "z2"),
        fixed_kwargs=_SG,
        strategy=ams.negative_cosine_samples,
        sample_inputs=_negative_cosine_samples,
        error_inputs=_negative_cosine_errors,
        tolerances=SSL_TOLERANCES,
        properties=("value", "bounded", "gradcheck", "stability"),
        overrides=_ZERO_ROW,
    )
)

register(
    LossSpec(
        name="dcl",
        fn=losses.dcl,
        citation="Yeh et al. 2022 (DCL, arXiv:2110.06848) Eq. 6 with w = 1",
        conventions="as nt_xent(decoupled=True): positive out of the denominator, 2N anchors, mean",
        inputs=("z1", "z2"),
        strategy=ams.dcl_samples,
        sample_inputs=_two_view_samples(),
        error_inputs=_dcl_errors(weighted=False),
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "decoupling", "reduction", "invariance", "gradcheck", "stability"),
        overrides=_ZERO_ROW,
    )
)

register(
    LossSpec(
        name="dclw",
        fn=losses.dcl,
        citation="Yeh et al. 2022 (DCLW, arXiv:2110.06848) Eq. 6 with the negative von "
        "Mises-Fisher weight",
        conventions="as dcl, positive term times w = 2 - N softmax(s_pos / sigma) of its sample "
        "(sigma 0.5); registered with the weights differentiated",
        inputs=("z1", "z2"),
        fixed_kwargs={"weight": "vmf", **_SG},
        strategy=lambda **kw: ams.dcl_samples(weighted=True, **kw),
        sample_inputs=_two_view_samples(lambda n: {"sigma": 0.5}),
        error_inputs=_dcl_errors(weighted=True),
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "decoupling", "reduction", "invariance", "gradcheck", "stability"),
        overrides=_ZERO_ROW,
    )
)

register(
    LossSpec(
        name="moco_v3",
        fn=losses.moco_v3,
        citation="Chen, Xie, He 2021 (MoCo v3, arXiv:2104.02057) Algorithm 1",
        conventions="ctr(q1, k2) + ctr(q2, k1), ctr = 2 tau x in-batch InfoNCE of the queries "
        "against the keys (mean over N); registered without the stop-gradient",
        inputs=("q1", "q2", "k1", "k2"),
        fixed_kwargs=_SG,
        strategy=ams.moco_v3_samples,
        sample_inputs=_moco_v3_samples,
        error_inputs=_moco_v3_errors,
        tolerances=DEFAULT_TOLERANCES,
        properties=("value", "identity", "limits", "gradcheck", "stability"),
        overrides=_ZERO_ROW,
    )
)

register(
    LossSpec(
        name="dino",
        fn=losses.dino,
        citation="Caron et al. 2021 (DINO, arXiv:2104.14294) Eqs. 1-3",
        conventions="student (N, V_s, K), teacher (N, V_t, K) of the first V_t crops, centre "
        "(K,); CE of softmax((t - c)/0.04) and log-softmax(s/0.1), same-crop pairs skipped, "
        "mean over pairs; registered without the stop-gradient",
        inputs=("student", "teacher", "center"),
        fixed_kwargs=_SG,
        strategy=ams.dino_samples,
        sample_inputs=_dino_samples,
        error_inputs=_dino_errors,
        tolerances=SSL_TOLERANCES,
        properties=("value", "cross_entropy", "gradcheck", "stability"),
    )
)

register(
    LossSpec(
        name="swav",
        fn=losses.swav,
        citation="Caron et al. 2020 (SwAV, arXiv:2006.09882) Eqs. 1-3",
        conventions="(N, V, K) prototype scores; Sinkhorn codes (eps 0.05, 3 iterations) of the "
        "first 2 crops predicted from every other crop (tau 0.1), means over crops; registered "
        "with the codes differentiated",
        inputs=("scores",),
        fixed_kwargs=_SG,
        strategy=ams.swav_samples,
        sample_inputs=_swav_samples,
        error_inputs=_swav_errors,
        tolerances=SSL_TOLERANCES,
        properties=("value", "marginals", "cross_entropy", "gradcheck", "stability"),
    )
)


# --- metrics: a separate table ------------------------------------------------------------------
#
# The representation metrics of amcl_lab.metrics that the oracle checks like losses (value and
# gradient).  They are LossSpec rows of their own table, METRICS, never of REGISTRY: the
# generic loss tests, the property tests and markdown_table() iterate REGISTRY only.

#: Metric name -> entry (:func:`get_metric`); the metric oracle's references.
METRICS: dict[str, LossSpec] = {}

# Metrics have no temperature; float32 reductions over pairs and the SVD set the float32 bounds.
METRIC_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-10, inverse_temperature=False),
    torch.float32: Tolerance(rtol=1e-4, atol=1e-4, inverse_temperature=False),
    torch.float16: Tolerance(rtol=2e-3, atol=1e-3, inverse_temperature=False),
    torch.bfloat16: Tolerance(rtol=2e-2, atol=1e-2, inverse_temperature=False),
}


def register_metric(spec: LossSpec) -> LossSpec:
    """Add ``spec`` to :data:`METRICS`; a duplicate name is an error."""
    if spec.name in METRICS:
        raise ValueError(f"register_metric: a metric named {spec.name!r} is already registered")
    METRICS[spec.name] = spec
    return spec


def get_metric(name: str) -> LossSpec:
    """The metric entry called ``name``; the error lists the valid names."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(
            f"unknown reference metric {name!r}; registered: {', '.join(sorted(METRICS))}"
        ) from None


def _no_cases(*_: Any) -> list[Any]:
    return []


@st.composite
def _alignment_samples(draw: st.DrawFn, dtype: torch.dtype, device: Any) -> SampleInput:
    z1, z2 = draw(ams.embedding_pairs(rows=st.integers(1, 8), dtype=dtype, device=device))
    alpha = draw(st.sampled_from([2.0, 3.0, 4.0]))  # d^alpha is smooth at d = 0 for alpha >= 2
    return SampleInput((z1, z2), {"alpha": alpha}, name="alignment")


@st.composite
def _uniformity_samples(draw: st.DrawFn, dtype: torch.dtype, device: Any) -> SampleInput:
    z = draw(ams.embeddings(rows=st.integers(2, 8), dtype=dtype, device=device))
    t = draw(st.sampled_from([0.5, 1.0, 2.0, 5.0]))
    return SampleInput((z,), {"t": t, "chunk_size": draw(st.sampled_from([1, 3, 1024]))},
                       name="uniformity")  # fmt: skip


@st.composite
def _tolerance_samples(draw: st.DrawFn, dtype: torch.dtype, device: Any) -> SampleInput:
    n = draw(st.integers(2, 8))
    z = draw(ams.embeddings(rows=n, dtype=dtype, device=device))
    labels = draw(ams.labels(n=n, num_classes=st.integers(1, 3)))
    if int(labels.unique(return_counts=True)[1].max()) < 2:  # conditional needs a pair
        labels = labels.clone()
        labels[1] = labels[0]
    reading = draw(st.sampled_from(["conditional", "literal"]))
    return SampleInput((z, labels.to(device)), {"reading": reading}, name="tolerance")


@st.composite
def _effective_rank_samples(draw: st.DrawFn, dtype: torch.dtype, device: Any) -> SampleInput:
    """Gaussian batches with column scales from 1e-2 to 1e2: distinct singular values, so
    the metric is differentiable and no singular value sits at the rank cut-off."""
    n, d = draw(st.integers(2, 8)), draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scales = torch.tensor(draw(st.lists(st.floats(-2.0, 2.0), min_size=d, max_size=d)))
    z = torch.randn(n, d, generator=gen, dtype=torch.float64) * 10.0 ** scales.double()
    return SampleInput((z.to(dtype=dtype, device=device),), {"center": draw(st.booleans())},
                       name="effective_rank")  # fmt: skip


def _metric_strategy(build: Callable[..., Any]) -> Callable[..., st.SearchStrategy[SampleInput]]:
    def strategy(*, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Any:
        return build(dtype, device)

    return strategy


for _name, _fn, _citation, _conventions, _inputs, _build in (
    (
        "alignment",
        metrics.alignment,
        "Wang & Isola 2020 (arXiv:2005.10242), L_align",
        "(N, D) views, rows L2-normalised, mean over N of |u1 - u2|^alpha; alpha in {2, 3, 4}",
        ("z1", "z2"),
        _alignment_samples,
    ),
    (
        "uniformity",
        metrics.uniformity,
        "Wang & Liu 2021 (arXiv:2012.09740) Eq. 10; Wang & Isola 2020 L_uniform",
        "(N, D), rows L2-normalised, log mean of exp(-t |u_i - u_j|^2) over distinct pairs "
        "i < j (the loss: lower is more uniform)",
        ("z",),
        _uniformity_samples,
    ),
    (
        "tolerance",
        metrics.tolerance,
        "Wang & Liu 2021 (arXiv:2012.09740) Eq. 11",
        "(N, D) and (N,) labels; conditional: mean cosine of distinct same-class pairs; "
        "literal: sum over all N^2 same-class pairs / N^2",
        ("z", "labels"),
        _tolerance_samples,
    ),
    (
        "effective_rank",
        metrics.effective_rank,
        "Roy & Vetterli 2007; Garrido et al. 2023 (RankMe, arXiv:2210.02885)",
        "exp of the entropy of the normalised singular values of the (centred) batch; values "
        "below max(N, D) eps sigma_max dropped",
        ("z",),
        _effective_rank_samples,
    ),
):
    register_metric(
        LossSpec(
            name=_name,
            fn=_fn,
            citation=_citation,
            conventions=_conventions,
            inputs=_inputs,
            strategy=_metric_strategy(_build),
            sample_inputs=_no_cases,
            error_inputs=_no_cases,
            tolerances=METRIC_TOLERANCES,
            properties=(),
        )
    )
