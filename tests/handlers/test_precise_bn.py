"""Precise BatchNorm statistics: an exact average over batches, never a reset to nothing."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import DataLoader

from monai_contrastive.handlers import PreciseBatchNorm, update_bn_stats


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


def _bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2, momentum=0.01))


def test_precise_bn_with_no_batch_never_resets(caplog):
    """Fewer items than one BN batch with drop_last: the loader yields nothing. The statistics must not be reset
    (every prediction would be one constant): fall back to one batch of all items, or fail saying why."""
    g = torch.Generator().manual_seed(1)
    items = [{"image": torch.randn(1, 3, 3, generator=g) * 3 + 1} for _ in range(3)]
    net = _bn_net()
    net[1].running_mean.fill_(5.0)
    loader = DataLoader(items, batch_size=8, drop_last=True)
    assert len(loader) == 0
    with caplog.at_level(logging.WARNING):
        assert update_bn_stats(net, loader, num_batches=4) == 1
    assert "yielded no batch (3 items, batch_size 8" in caplog.text
    with torch.no_grad():
        mean = net[0](torch.stack([i["image"] for i in items])).mean((0, 2, 3))
    torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-6)

    net = _bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"yielded no batch \(1 items, batch_size 8"):
        update_bn_stats(net, DataLoader(items[:1], batch_size=8, drop_last=True))
    with pytest.raises(RuntimeError, match="no batch"):
        PreciseBatchNorm(net, [], num_batches=2)(None)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
