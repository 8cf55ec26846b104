from __future__ import annotations

import os

import pytest
import torch

from monai_contrastive.handlers import RegressionMetric, atomic_save, regression_metrics, update_bn_stats
from monai_contrastive.networks import RegressionContrastiveNet


def test_regression_metric_pools_the_whole_set():
    p = torch.tensor([1.0, 2.0, 3.0, 5.0])
    t = torch.tensor([1.5, 2.0, 2.0, 4.0])
    m = {k: RegressionMetric(k) for k in ("mae", "rmse", "r2")}
    for metric in m.values():
        metric(p[:2, None], t[:2, None])  # two batches
        metric(p[2:, None], t[2:, None])
    err = p - t
    assert m["mae"].aggregate().item() == pytest.approx(err.abs().mean().item())
    assert m["rmse"].aggregate().item() == pytest.approx(err.pow(2).mean().sqrt().item())
    r2 = 1 - err.pow(2).sum() / (t - t.mean()).pow(2).sum()
    assert m["r2"].aggregate().item() == pytest.approx(r2.item(), rel=1e-5)
    assert regression_metrics(p, t)["r2"] == pytest.approx(r2.item(), rel=1e-6)
    with pytest.raises(ValueError, match="no samples"):
        RegressionMetric("mae").aggregate()


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    atomic_save({"a": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        atomic_save({"b": Boom()}, path)
    assert torch.load(path) == {"a": 1}
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")] == []


def test_update_bn_stats_is_exact_average():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2, momentum=0.01))
    batches = [{"image": torch.randn(4, 1, 3, 3) * (i + 1)} for i in range(3)]
    net.eval()
    assert update_bn_stats(net, batches, num_batches=3) == 3
    assert not net.training and net[1].momentum == 0.01
    with torch.no_grad():
        means = [net[0](b["image"]).mean((0, 2, 3)) for b in batches]
    torch.testing.assert_close(net[1].running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)


class _Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return x


def test_standardised_head_and_output_key():
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
