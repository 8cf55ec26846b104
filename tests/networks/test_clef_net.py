"""CLEF networks: named outputs, backbone transfer into the fine-tuning network, gradient checkpointing, size."""

from __future__ import annotations

import pytest
import torch

from monai_contrastive.networks import CLEFNet, CLEFSegNet, clef_backbone_weights

SMALL = (4, 8, 8, 16, 16, 4)


def test_outputs_are_named_and_shaped():
    torch.manual_seed(0)
    net = CLEFNet(feature_channels=6, features=SMALL)
    x = torch.randn(2, 1, 32, 32, 32)
    out = net(x)
    assert set(out) == {"embedding", "decoded"}
    assert out["embedding"].shape == (2, 6, 32, 32, 32) and out["decoded"].shape == x.shape
    theta = torch.eye(3, 4).repeat(2, 1, 1)
    out = net(x, theta=theta)
    # the identity warp: the second forward sees the same input, so both feature maps agree and every voxel is valid
    assert torch.allclose(out["embedding_of_warped"], out["embedding"], atol=1e-5)
    assert torch.allclose(out["warped_embedding"], out["embedding"], atol=1e-5)
    assert bool(out["warp_valid"].bool().all())


def test_backbone_transfers_and_the_head_is_new(tmp_path):
    torch.manual_seed(1)
    pre = CLEFNet(feature_channels=6, features=SMALL)
    path = tmp_path / "model.pt"
    torch.save(pre.state_dict(), path)
    torch.manual_seed(2)
    seg = CLEFSegNet(out_channels=13, features=SMALL, backbone_weights=clef_backbone_weights("clef", str(path)))
    for k, v in pre.backbone.state_dict().items():
        assert torch.equal(seg.backbone.state_dict()[k], v)
    assert seg.head[2].weight.shape[0] == 13
    out = seg(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 14, 32, 32, 32) and bool((out[:, 0] == 0).all())  # constant background logit first
    assert clef_backbone_weights("random", str(path)) is None
    with pytest.raises(FileNotFoundError, match="run the pretraining"):
        clef_backbone_weights("clef", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="'random' or 'clef'"):
        clef_backbone_weights("moco", str(path))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(3)
    a = CLEFSegNet(out_channels=3, features=SMALL)
    b = CLEFSegNet(out_channels=3, features=SMALL, gradient_checkpointing=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    a(x).square().mean().backward()
    b(x).square().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6, rtol=1e-4), name


def test_default_size_is_near_the_papers():
    """Table 2: 33.0 M parameters; the default widths give a 33.28 M backbone (heads add a few thousand)."""
    n = sum(p.numel() for p in CLEFSegNet().backbone.parameters())
    assert n == 33_277_696


def test_the_segmentation_network_scripts_for_torchscript_export():
    """Model-zoo ``ckpt_export`` scripts the network: the checkpointed training path is left out of the script."""
    torch.manual_seed(4)
    net = CLEFSegNet(out_channels=3, features=SMALL, gradient_checkpointing=True).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_background_channel_makes_argmax_the_papers_post_processing():
    """§2.3: background where every organ sigmoid is < 0.5, else 1 + argmax: the argmax over [0.5, sigmoids]."""
    from monai_contrastive.transforms.ct import AsOrganLabels

    torch.manual_seed(5)
    net = CLEFSegNet(out_channels=13, features=SMALL).eval()
    with torch.no_grad():
        net.head[2].bias.fill_(-0.3)  # some voxels below 0.5 everywhere, others not
        out = net(torch.randn(1, 1, 32, 32, 32))
    probs = torch.sigmoid(out[0])
    want = AsOrganLabels()(probs[1:])
    assert torch.equal(probs.argmax(0, keepdim=True).to(torch.uint8), want)
    assert 0 < int((want == 0).sum()) < want.numel()


def test_organ_prior_sets_the_starting_probability_of_every_organ():
    torch.manual_seed(0)
    net = CLEFSegNet(out_channels=3, features=SMALL, organ_prior=0.01).eval()
    assert torch.allclose(net.head[2].bias, torch.full((3,), -4.59512), atol=1e-5)
    # the head's last convolution is bias + small weights: the mean organ probability starts near the prior, far
    # below the 0.5 of PyTorch's default bias (which the network without organ_prior starts at)
    with torch.no_grad():
        x = torch.randn(1, 1, 32, 32, 32)
        with_prior = torch.sigmoid(net(x)[:, 1:]).mean()
        default = torch.sigmoid(CLEFSegNet(out_channels=3, features=SMALL).eval()(x)[:, 1:]).mean()
    assert float(with_prior) < 0.05 < 0.3 < float(default)
    with pytest.raises(ValueError, match="organ_prior"):
        CLEFSegNet(out_channels=3, features=SMALL, organ_prior=1.5)
