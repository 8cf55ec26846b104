"""The model contract: an encoder with named heads, dense projections, partial weight loading, MoCo's queue."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_contrastive.networks import (
    ContrastiveNet,
    DenseProjectionHead,
    FoldEnsemble,
    MomentumContrastNet,
    ProjectionHead,
    RegressionContrastiveNet,
    load_pretrained_weights,
)

from ..helpers import TinyBackbone


class _UNetFeatures(torch.nn.Module):
    """A 2D U-Net whose last decoder features (before its 1x1 output conv) are returned by name."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
        self.unet.final_conv = torch.nn.Identity()

    def forward(self, x):
        dec = self.unet(x)
        return {"decoder": dec, "features": dec.mean((2, 3))}


def test_contrastive_net_dense_and_global_heads():
    net = ContrastiveNet(
        _UNetFeatures(),
        heads={"pixel_embedding": DenseProjectionHead(4, 8, hidden_channels=6), "embedding": ProjectionHead(4, 0, 5)},
        head_inputs={"pixel_embedding": "decoder"},
    )
    out = net(torch.rand(2, 1, 32, 32))
    assert set(out) == {"decoder", "features", "pixel_embedding", "embedding"}
    assert out["pixel_embedding"].shape == (2, 8, 32, 32) and out["embedding"].shape == (2, 5)
    torch.testing.assert_close(out["pixel_embedding"].norm(dim=1), torch.ones(2, 32, 32))
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(2))
    net.output_key = "pixel_embedding"
    assert net(torch.rand(1, 1, 32, 32)).shape == (1, 8, 32, 32)
    with pytest.raises(ValueError, match="unknown heads"):
        ContrastiveNet(_UNetFeatures(), heads={}, head_inputs={"x": "decoder"})
    bad = ContrastiveNet(_UNetFeatures(), heads={"e": ProjectionHead(4, 0, 5)}, head_inputs={"e": "nope"})
    with pytest.raises(KeyError, match="'nope'"):
        bad(torch.rand(1, 1, 32, 32))


def test_dense_projection_is_a_pixelwise_linear_map():
    head = DenseProjectionHead(3, 4, spatial_dims=3)
    x = torch.randn(2, 3, 2, 3, 4)
    conv = head.net[0]
    expect = torch.einsum("oc,bcdhw->bodhw", conv.weight[:, :, 0, 0, 0], x) + conv.bias.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(head(x), torch.nn.functional.normalize(expect, dim=1))


def test_regression_net_is_a_contrastive_net_configuration():
    net = RegressionContrastiveNet(TinyBackbone(), 4, fc_name="fc", proj_dim=6, target_mean=2.0, target_std=0.5)
    assert isinstance(net, ContrastiveNet) and set(net.heads) == {"pred", "embedding"}
    x = torch.rand(3, 1, 8, 8)
    out = net(x)
    assert out["pred"].shape == (3, 1) and out["embedding"].shape == (3, 6) and out["features"].shape == (3, 4)
    lin = net.heads["pred"].linear
    torch.testing.assert_close(out["pred"], (out["features"] @ lin.weight.t() + lin.bias) * 0.5 + 2.0)
    net.output_key = "pred"
    torch.testing.assert_close(net(x), out["pred"])
    ens = FoldEnsemble([net, net])
    torch.testing.assert_close(ens(x), out["pred"])


def test_load_pretrained_weights_partial(tmp_path):
    src = RegressionContrastiveNet(TinyBackbone(), 4, fc_name="fc", proj_dim=6)
    torch.save({"model": src.state_dict()}, tmp_path / "pre.pt")
    dst = RegressionContrastiveNet(TinyBackbone(), 4, fc_name="fc", proj_dim=9)  # another projection size
    load_pretrained_weights(dst, str(tmp_path / "pre.pt"), key="model", exclude_vars="heads.pred")
    torch.testing.assert_close(dst.encoder.backbone.conv.weight, src.encoder.backbone.conv.weight)
    assert not torch.equal(dst.heads["pred"].linear.weight, src.heads["pred"].linear.weight)  # excluded
    assert dst.heads["embedding"].net[-1].weight.shape == (9, 4)  # shape mismatch: left as initialised
    # a sub-module from a prefix of the file (e.g. the encoder of a pretraining checkpoint)
    enc = TinyBackbone()
    load_pretrained_weights(enc, str(tmp_path / "pre.pt"), key="model", prefix="encoder.backbone.")
    torch.testing.assert_close(enc.conv.bias, src.encoder.backbone.conv.bias)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_pretrained_weights(enc, str(tmp_path / "missing.pt"))
    with pytest.raises(KeyError, match="'state_dict'"):
        load_pretrained_weights(enc, str(tmp_path / "pre.pt"), key="state_dict")
    with pytest.raises(ValueError, match="no tensor"):
        load_pretrained_weights(enc, str(tmp_path / "pre.pt"), key="model", prefix="nothing.")


def test_moco_net_queue_is_fifo_and_saved():
    enc = ContrastiveNet(torch.nn.Conv2d(1, 4, 3), heads={"embedding": ProjectionHead(4, 0, 3)})
    net = MomentumContrastNet(enc, dim=3, queue_size=4, momentum=0.5)
    assert all(not p.requires_grad for p in net.key_encoder.parameters())
    keys = torch.arange(18.0).reshape(6, 3)
    net.enqueue(keys[:3])
    net.enqueue(keys[3:6])  # wraps: slots 3, 0, 1
    torch.testing.assert_close(net.queue, torch.stack([keys[4], keys[5], keys[2], keys[3]]))
    assert int(net.queue_ptr) == 2
    state = net.state_dict()
    assert "queue" in state and "queue_ptr" in state
    out = net(torch.rand(2, 1, 6, 6))
    assert "query" not in out  # no key view: the query encoder's outputs only (inference)
    out = net(torch.rand(2, 1, 6, 6), key_input=torch.rand(2, 1, 6, 6))
    assert out["query"].shape == (2, 3) and out["key"].shape == (2, 3) and out["queue"].shape == (4, 3)
    assert not out["key"].requires_grad and out["query"].requires_grad
    with pytest.raises(ValueError, match="keys must be"):
        net.enqueue(torch.zeros(2, 5))
