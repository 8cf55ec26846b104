"""The demo's small video backbone: shapes, the classifier slot the regression net empties, TorchScript."""

from __future__ import annotations

import torch

from monai_contrastive.networks import FramePoolVideoNet, RegressionContrastiveNet


def test_frame_pool_video_net_shapes_and_drop_in():
    torch.manual_seed(0)
    backbone = FramePoolVideoNet(in_channels=3, channels=(4, 8), feature_dim=16)
    assert backbone(torch.rand(2, 3, 5, 16, 16)).shape == (2, 16)
    # fc_name="fc" and the feature size are all the bundle's network_def needs to swap R(2+1)D-18 for it
    net = RegressionContrastiveNet(
        backbone, 16, fc_name="fc", proj_hidden=16, proj_dim=8, target_mean=55.0, target_std=12.0
    )
    out = net(torch.rand(2, 3, 5, 16, 16))
    assert out["features"].shape == (2, 16) and out["pred"].shape == (2, 1) and out["embedding"].shape == (2, 8)
    net.eval()
    x = torch.rand(1, 3, 6, 16, 16)
    torch.testing.assert_close(torch.jit.script(net)(x)["pred"], net(x)["pred"])


def test_frame_pool_video_net_sees_temporal_extremes():
    # max and min over time: reversing the frames changes nothing, but a clip whose range differs does
    torch.manual_seed(0)
    net = FramePoolVideoNet(in_channels=1, channels=(4,), feature_dim=8).eval()
    x = torch.rand(1, 1, 6, 8, 8)
    torch.testing.assert_close(net(x), net(x.flip(2)))
    y = x.clone()
    y[:, :, 0] = 0.0
    assert not torch.allclose(net(x), net(y))
