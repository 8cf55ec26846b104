"""Network heads: the standardised regression head keeps the label statistics in the state dict."""

from __future__ import annotations

import pytest
import torch

from monai_contrastive.networks import RegressionContrastiveNet


class _Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return x


def test_standardised_head_and_output_key():
    torch.manual_seed(0)  # the unit-norm check needs a projection that is not all zero
    net = RegressionContrastiveNet(_Backbone(), 3, fc_name="fc", target_mean=0.7, target_std=0.13, proj_dim=5)
    torch.nn.init.zeros_(net.heads["pred"].linear.weight)
    out = net(torch.randn(2, 3))
    torch.testing.assert_close(out["pred"], torch.full((2, 1), 0.7))
    assert out["embedding"].norm(dim=1).allclose(torch.ones(2))
    # the label statistics live in the state dict, so inference restores them
    fresh = RegressionContrastiveNet(_Backbone(), 3, fc_name="fc", proj_dim=5, output_key="pred")
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(fresh(torch.randn(2, 3)), torch.full((2, 1), 0.7))
    with pytest.raises(AttributeError, match="classifier"):
        RegressionContrastiveNet(_Backbone(), 3, fc_name="nope")
