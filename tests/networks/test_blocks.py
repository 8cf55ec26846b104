"""InputNormalization and RegressionContrastiveNet taking uint8 videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_contrastive.networks import InputNormalization, RegressionContrastiveNet
from monai_contrastive.transforms.video import NormalizeVideo


def test_input_normalization_matches_normalize_video():
    rng = np.random.default_rng(0)
    clip = torch.as_tensor(rng.integers(0, 256, (2, 3, 4, 6, 6), dtype=np.uint8))
    mean, std = [30.0, 40.0, 50.0], [20.0, 25.0, 30.0]
    layer = InputNormalization(mean, std)
    out = layer(clip)
    assert out.dtype == torch.float32 and out.shape == clip.shape
    for b in range(2):
        torch.testing.assert_close(out[b], NormalizeVideo(mean, std)(clip[b]))
    assert set(layer.state_dict()) == {"mean", "std"}
    half = layer(clip.half())
    assert half.dtype == torch.float16
    with pytest.raises(ValueError, match="4 channels"):
        layer(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="std > 0"):
        InputNormalization([1.0, 2.0], [1.0, 0.0])


def test_regression_net_with_input_norm_on_uint8_video():
    backbone = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
    net = RegressionContrastiveNet(
        backbone, feature_dim=8, fc_name=None, reg_bias_init=55.0, input_norm=InputNormalization([100.0], [50.0])
    )
    out = net(torch.full((2, 3, 4, 8, 8), 100, dtype=torch.uint8))
    assert out["pred"].shape == (2, 1) and out["embedding"].shape == (2, 128)
    assert torch.allclose(out["features"], out["features"][:1])  # 100 normalises to 0 for every sample
    assert "input_norm.mean" in net.state_dict()


def test_input_normalization_takes_its_statistics_from_a_state_dict(tmp_path):
    fitted = InputNormalization([30.0, 40.0, 50.0], [20.0, 25.0, 30.0])
    bare = InputNormalization(num_channels=1)  # what an inference config builds: no statistics file needed
    with pytest.warns(UserWarning, match="no statistics"):
        bare(torch.zeros(1, 1, 2, 2))
    bare.load_state_dict(fitted.state_dict())
    clip = torch.randint(0, 256, (1, 3, 2, 4, 4), dtype=torch.uint8)
    torch.testing.assert_close(bare(clip), fitted(clip))
    # the statistics inside a saved model, for inference-time padding with the mean colour
    net = torch.nn.Module()
    net.input_norm = fitted
    torch.save({"model": net.state_dict()}, tmp_path / "model.pt")
    mean, std = InputNormalization.stats_from_checkpoint(str(tmp_path / "model.pt"))
    assert mean == [30.0, 40.0, 50.0] and std == [20.0, 25.0, 30.0]
    with pytest.raises(KeyError, match="input normalisation"):
        InputNormalization.stats_from_checkpoint(str(tmp_path / "model.pt"), prefix="other.")
    with pytest.raises(ValueError, match="both"):
        InputNormalization(mean=[1.0])
