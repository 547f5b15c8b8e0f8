"""The public strategies: invalid calls raise InvalidArgument, draws meet their contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from amcl_lab.testing import strategies as ams

INVALID = [
    pytest.param(ams.temperatures, {"min_value": 0.0}, id="temperatures(min_value=0)"),
    pytest.param(ams.temperatures, {"min_value": 2.0, "max_value": 1.0}, id="temperatures(2>1)"),
    pytest.param(ams.embeddings, {"rows": 0}, id="embeddings(rows=0)"),
    pytest.param(ams.embeddings, {"dim": 1.5}, id="embeddings(dim=1.5)"),
    pytest.param(ams.embeddings, {"dtype": torch.int64}, id="embeddings(dtype=int64)"),
    pytest.param(ams.embeddings, {"min_norm": -1.0}, id="embeddings(min_norm=-1)"),
    pytest.param(ams.embedding_pairs, {"relations": ("twins",)}, id="embedding_pairs(twins)"),
    pytest.param(ams.embedding_pairs, {"relations": ()}, id="embedding_pairs(no relation)"),
    pytest.param(ams.labels, {"num_classes": 0}, id="labels(num_classes=0)"),
    pytest.param(ams.multiview_features, {"views": 0}, id="multiview_features(views=0)"),
    pytest.param(ams.two_view_samples, {"max_rows": 1}, id="two_view_samples(max_rows=1)"),
    # self-supervised losses
    pytest.param(ams.vicreg_samples, {"dtype": torch.int64}, id="vicreg_samples(dtype=int64)"),
    pytest.param(ams.dcl_samples, {"min_temperature": 0.0}, id="dcl_samples(min_temperature=0)"),
    pytest.param(
        ams.moco_v3_samples,
        {"min_temperature": 2.0, "max_temperature": 1.0},
        id="moco_v3_samples(2>1)",
    ),
    pytest.param(ams.dino_samples, {"dtype": torch.bool}, id="dino_samples(dtype=bool)"),
    pytest.param(ams.swav_samples, {"dtype": "float64"}, id="swav_samples(dtype='float64')"),
    pytest.param(
        ams.negative_cosine_samples, {"dtype": torch.int32}, id="negative_cosine_samples(int32)"
    ),
    pytest.param(
        ams.multiview_vicreg_samples, {"dtype": torch.int8}, id="multiview_vicreg_samples(int8)"
    ),
]


@pytest.mark.parametrize(("strategy", "kwargs"), INVALID)
def test_invalid_arguments_raise_invalid_argument(strategy, kwargs):
    with pytest.raises(InvalidArgument):
        strategy(**kwargs).example()


@given(ams.temperatures(min_value=1e-3, max_value=1e3))
def test_temperatures_stay_in_range(tau):
    assert 1e-3 <= tau <= 1e3


@given(ams.embeddings(rows=5, dim=3, min_norm=1e-2, max_norm=1e2, dtype=torch.float32))
def test_embeddings_have_shape_dtype_and_norm_range(z):
    assert z.shape == (5, 3) and z.dtype == torch.float32
    norms = torch.linalg.vector_norm(z.double(), dim=1)
    assert torch.all(norms >= 1e-2 * (1 - 1e-5)) and torch.all(norms <= 1e2 * (1 + 1e-5))


@given(ams.embedding_pairs(relations=("antipodal",)))
def test_antipodal_pairs_have_cosine_minus_one(pair):
    z1, z2 = pair
    cos = torch.nn.functional.cosine_similarity(z1, z2, dim=1)
    assert torch.allclose(cos, -torch.ones_like(cos), atol=1e-12)


@given(ams.embedding_pairs(relations=("near_duplicate",)))
def test_near_duplicates_have_cosine_close_to_one(pair):
    z1, z2 = pair
    cos = torch.nn.functional.cosine_similarity(z1, z2, dim=1)
    assert torch.all(cos > 1 - 1e-4)


@given(st.data())
def test_labels_respect_the_minimum_class_count(data):
    y = data.draw(ams.labels(n=8, num_classes=3, min_per_class=2))
    counts = torch.bincount(y)
    assert y.shape == (8,) and y.dtype == torch.long
    assert torch.all(counts[counts > 0] >= 2)


@given(ams.supcon_samples())
def test_supcon_samples_always_have_a_positive(sample):
    features, labels = sample.args
    if features.shape[1] == 1:
        assert torch.bincount(labels).max() >= 2


@pytest.mark.parametrize(
    ("strategy", "condition"),
    [
        pytest.param(ams.temperatures(), lambda t: t < 2e-3, id="temperature near 1e-3"),
        pytest.param(ams.temperatures(), lambda t: t > 5e2, id="temperature near 1e3"),
        pytest.param(ams.embeddings(), lambda z: z.norm(dim=1).min() < 2e-3, id="tiny norms"),
        pytest.param(ams.embeddings(), lambda z: z.norm(dim=1).max() > 5e2, id="huge norms"),
        pytest.param(ams.embeddings(), lambda z: z.shape[1] == 1, id="dimension 1"),
        pytest.param(ams.embeddings(), lambda z: z.shape[0] == 2, id="batch of 2"),
    ],
)
def test_defaults_reach_the_edges_of_the_documented_domain(strategy, condition):
    """The oracle relies on these draws reaching the domain's edges, where bugs show."""
    assert condition(find(strategy, condition, settings=settings(max_examples=2000)))


@given(ams.dino_samples())
def test_dino_samples_pair_each_teacher_crop_with_a_student_crop(sample):
    student, teacher, center = sample.args
    assert 1 <= teacher.shape[1] <= student.shape[1] and student.shape[1] >= 2
    assert teacher.shape[::2] == student.shape[::2] and center.shape == (student.shape[2],)


@given(ams.swav_samples())
def test_swav_samples_are_cosines_with_valid_keywords(sample):
    (scores,) = sample.args
    assert scores.abs().max() <= 1.0 and 1 <= sample.kwargs["assigned"] <= scores.shape[1]
