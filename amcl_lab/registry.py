"""The loss registry: one :class:`LossSpec` per reference loss.

Design note.  Every consumer that needs to know "which losses exist and how to call them"
reads this registry instead of keeping its own list: the generic tests in
``tests/registry`` (finite values and gradients, float32 against float64, ``gradcheck``,
error messages), the property tests (which losses a property applies to), the oracle
(how to draw valid inputs and how close a candidate must be), and the loss table in the
README (:func:`markdown_table`).  Adding a loss means adding one entry here; per-test
exceptions are data in the entry, never ``if name == ...`` branches inside a test.

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

from . import losses
from .samples import ErrorInput, SampleInput, Tolerance
from .testing import strategies as ams

__all__ = [
    "PROPERTIES",
    "REGISTRY",
    "LossSpec",
    "Override",
    "get",
    "markdown_table",
    "names",
    "register",
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


def markdown_table() -> str:
    """The README's loss table, generated from the registry."""
    lines = [
        "| loss | reference | conventions | properties |",
        "|---|---|---|---|",
    ]
    for spec in REGISTRY.values():
        fixed = ", ".join(f"{k}={v!r}" for k, v in spec.fixed_kwargs.items())
        call = f"`{spec.fn.__name__}({fixed})`" if fixed else f"`{spec.fn.__name__}`"
        lines.append(
            f"| {call} | {spec.citation} | {spec.conventions} | {', '.join(spec.properties)} |"
        )
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
