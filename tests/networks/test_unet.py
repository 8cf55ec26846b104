"""FeatureUNet / GlobalLocalUNet (LRC thesis §3.2): shapes, encoder-only branch, branch-wise pretrained weights."""

from __future__ import annotations

import pytest
import torch

from monai_contrastive.networks import (
    ContrastiveNet,
    FeatureUNet,
    GlobalLocalUNet,
    MomentumContrastNet,
    ProjectionHead,
)

FEATURES = (4, 4, 8, 8, 16, 4)


def test_feature_unet_outputs_and_instance_norm():
    net = FeatureUNet(2, 1, FEATURES)
    out = net(torch.rand(2, 1, 32, 48))
    assert out["decoder"].shape == (2, 4, 32, 48) and out["features"].shape == (2, 16, 2, 3)
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
    enc = FeatureUNet(2, 1, FEATURES, encoder_only=True)
    assert set(enc(torch.rand(1, 1, 32, 32))) == {"features"}
    assert not any(k.startswith("upcat") for k in enc.state_dict())
    # the encoder's tensors are a subset of the full U-Net's, by name
    assert set(enc.state_dict()) < set(net.state_dict())


def test_global_local_unet_fuses_both_decoders():
    net = GlobalLocalUNet(2, 1, 5, FEATURES)
    x = torch.rand(2, 1, 32, 32)
    g, loc = net.global_unet(x)["decoder"], net.local_unet(x)["decoder"]
    expect = torch.nn.functional.conv2d(torch.cat([g, loc], 1), net.head.weight, net.head.bias)
    torch.testing.assert_close(net(x), expect)
    assert net.head.in_channels == 8 and net.head.out_channels == 5


def test_branch_weights_from_moco_and_lrc_checkpoints(tmp_path):
    torch.manual_seed(0)
    moco = MomentumContrastNet(
        ContrastiveNet(FeatureUNet(2, 1, FEATURES, encoder_only=True), heads={"embedding": ProjectionHead(16, 0, 8)}),
        dim=8,
        queue_size=4,
    )
    torch.save({"model": moco.state_dict()}, tmp_path / "moco.pt")
    lrc = ContrastiveNet(FeatureUNet(2, 1, FEATURES))
    torch.save({"model": lrc.state_dict()}, tmp_path / "lrc.pt")
    torch.manual_seed(5)
    fresh = GlobalLocalUNet(2, 1, 5, FEATURES)
    torch.manual_seed(5)  # the same initialisation, then the two checkpoints
    net = GlobalLocalUNet(
        2, 1, 5, FEATURES, global_weights=str(tmp_path / "moco.pt"), local_weights=str(tmp_path / "lrc.pt")
    )
    # global encoder from MoCo's query encoder; its decoder is not in the checkpoint and stays as initialised
    torch.testing.assert_close(
        net.global_unet.conv_0.conv_0.conv.weight, moco.encoder.encoder.conv_0.conv_0.conv.weight
    )
    assert not torch.equal(net.global_unet.conv_0.conv_0.conv.weight, fresh.global_unet.conv_0.conv_0.conv.weight)
    for k, v in fresh.global_unet.state_dict().items():
        if k.startswith("upcat"):
            torch.testing.assert_close(net.global_unet.state_dict()[k], v)
    # the whole local U-Net (encoder and decoder) from LRC
    for k, v in lrc.encoder.state_dict().items():
        torch.testing.assert_close(net.local_unet.state_dict()[k], v)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        GlobalLocalUNet(2, 1, 5, FEATURES, global_weights=str(tmp_path / "missing.pt"))


def test_branch_weights_are_read_by_name(tmp_path):
    """train.json reads ``@branch_weights.global_weights`` / ``.local_weights``, never a position."""
    from monai_contrastive.networks import pretrained_branch_weights

    for sub in ("pretrain_moco", "pretrain_lrc"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "model.pt").write_bytes(b"x")
    both = pretrained_branch_weights("lrc_moco", str(tmp_path))
    assert both.global_weights == str(tmp_path / "pretrain_moco" / "model.pt")
    assert both.local_weights == str(tmp_path / "pretrain_lrc" / "model.pt")
    assert pretrained_branch_weights("lrc", str(tmp_path))._asdict() == {
        "global_weights": "",
        "local_weights": str(tmp_path / "pretrain_lrc" / "model.pt"),
    }
    assert pretrained_branch_weights("random", str(tmp_path)) == ("", "")
