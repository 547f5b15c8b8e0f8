"""Encoders, heads and the Network wrapper."""

from __future__ import annotations

import pytest
import torch

from amcl_lab.amcl import MultiHeadProjector as AMCLMultiHeadProjector
from amcl_lab.models import (
    MLP,
    LinearClassifier,
    MultiHeadProjector,
    Network,
    Normalize,
    ProjectionHead,
    ResNet18,
    SmallCNN,
    build_encoder,
)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_resnet18_has_the_cifar_resnet18_parameter_count():
    """11,173,962 parameters with a 10-class linear layer (the common CIFAR ResNet-18)."""
    encoder = ResNet18(3, 64)
    assert encoder.feature_dim == 512
    assert _count(encoder) + _count(LinearClassifier(512, 10)) == 11_173_962


def test_resnet18_keeps_resolution_in_the_stem_and_pools_to_features():
    encoder = ResNet18(3, 4)
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    stem = encoder.net[0]
    assert stem.stride == (1, 1) and stem.kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in encoder.modules())


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (28, 1), (32, 3)])
def test_small_encoders_map_images_to_feature_vectors(size, channels):
    x = torch.rand(3, channels, size, size)
    assert SmallCNN(channels, 5)(x).shape == (3, 20)
    assert MLP(channels * size * size, 7)(x).shape == (3, 7)
    assert build_encoder("cnn", channels, size, 5).feature_dim == 20
    with pytest.raises(ValueError, match="name must be one of"):
        build_encoder("vit", channels, size, 5)


def test_network_normalises_and_stacks_heads():
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    encoder = MLP(16, 6)
    single = Network(Normalize(mean, std), encoder, ProjectionHead(6, 8, 3))
    x = torch.rand(5, 1, 4, 4)
    out = single(x)
    assert out.features.shape == (5, 6) and out.embeddings.shape == (1, 5, 3)
    assert out.logits is None
    single.eval()
    torch.testing.assert_close(single.encode(x), encoder((x - 0.5) / 0.25))
    multi = Network(Normalize(mean, std), MLP(16, 6), MultiHeadProjector(6, 8, 3, heads=4))
    assert multi(x).embeddings.shape == (4, 5, 3)
    classifier = Network(Normalize(mean, std), MLP(16, 6), None, LinearClassifier(6, 10))
    assert classifier(x).logits.shape == (5, 10) and classifier(x).embeddings is None


def test_multi_head_projector_is_the_amcl_one():
    assert MultiHeadProjector is AMCLMultiHeadProjector
