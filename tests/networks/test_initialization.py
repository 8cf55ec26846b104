"""The randomly initialised reference of Table 4.1 (evaluate_lrc.json): the pretrained network, re-initialised."""

from __future__ import annotations

import pytest
import torch

from monai_contrastive.networks import ContrastiveNet, FeatureUNet, ProjectionHead, reinitialized_copy

FEATURES = (4, 4, 8, 8, 16, 4)


def _lrc_net() -> ContrastiveNet:
    """pretrain_lrc.json's network (pixel embeddings from the U-Net decoder, no head)."""
    return ContrastiveNet(FeatureUNet(2, 1, FEATURES))


def test_reinitialized_copy_is_a_fresh_build_of_the_same_architecture():
    torch.manual_seed(0)
    trained = _lrc_net()
    with torch.no_grad():  # stands for pretraining: every tensor moved away from its initial value
        for p in trained.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    torch.manual_seed(7)
    fresh = _lrc_net()
    torch.manual_seed(7)
    twin = reinitialized_copy(trained)
    # the same draw as constructing the network anew under the same seed, tensor for tensor (the layers are reset
    # in module order, which is the order this network builds them in)
    assert twin.state_dict().keys() == fresh.state_dict().keys()
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[k], v, rtol=0, atol=0, msg=k)
    # the trained network is untouched and shares no tensor with its twin
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.data_ptr() == q.data_ptr() for p in trained.parameters() for q in twin.parameters())
    weight = "encoder.conv_0.conv_0.conv.weight"
    assert not torch.equal(twin.state_dict()[weight], trained.state_dict()[weight])


def test_module_without_reset_is_refused():
    class Opaque(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

    with pytest.raises(ValueError, match="Opaque.*reset_parameters"):
        reinitialized_copy(Opaque())


def test_every_layer_of_a_headed_network_is_redrawn():
    torch.manual_seed(0)
    net = ContrastiveNet(FeatureUNet(2, 1, FEATURES, encoder_only=True), heads={"embedding": ProjectionHead(16, 0, 8)})
    twin = reinitialized_copy(net)
    for (k, v), w in zip(net.state_dict().items(), twin.state_dict().values()):
        if v.is_floating_point() and v.numel() > 1 and v.std() > 0:
            assert not torch.equal(v, w), k
