from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine
from torch.utils.data import DataLoader

from monai_contrastive.handlers import (
    PreciseBatchNorm,
    RegressionMetric,
    ResumableCheckpoint,
    regression_metrics,
    update_bn_stats,
)
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


def _trainer_with_checkpoint(tmp_path, fingerprint, epochs=2):
    net = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: None)
    ckpt = ResumableCheckpoint(str(tmp_path), {"model": net}, fingerprint=fingerprint)
    ckpt.attach(trainer)
    return trainer, ckpt


def test_resumable_checkpoint_refuses_another_runs_checkpoint(tmp_path):
    fp = {"datalist": "/data/a/dataset.json", "num_items": 10, "items_sha256": "abc", "fold": 0}
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, fp)
    trainer.run([0, 1], max_epochs=2)
    assert torch.load(ckpt.path, weights_only=False)["run_fingerprint"] == fp
    # the same run resumes (a finished one trains nothing)
    trainer, _ = _trainer_with_checkpoint(tmp_path, dict(fp))
    trainer.run([0, 1], max_epochs=3)
    assert trainer.state.epoch == 3
    other = dict(fp, datalist="/data/b/dataset.json", items_sha256="def")
    trainer, _ = _trainer_with_checkpoint(tmp_path, other)
    with pytest.raises(ValueError) as info:
        trainer.run([0, 1], max_epochs=3)
    msg = str(info.value)
    assert "other data (datalist, items_sha256 differ)" in msg and "/data/a/dataset.json" in msg
    assert "/data/b/dataset.json" in msg and "delete" in msg and "ckpt_dir" in msg
    # optional: without a fingerprint nothing is recorded or checked (other bundles)
    trainer, ckpt = _trainer_with_checkpoint(tmp_path / "plain", None)
    trainer.run([0], max_epochs=1)
    assert "run_fingerprint" not in torch.load(ckpt.path, weights_only=False)


def test_resumable_checkpoint_defers_to_a_checkpoint_loader(tmp_path):
    """MONAI Label's /train adds a CheckpointLoader of models/model.pt: a second /train on other labels trains from
    those weights instead of resuming (or refusing) the first run's checkpoint, which is kept aside."""
    from monai.handlers import CheckpointLoader

    fp = {"datalist": "a", "items_sha256": "abc"}
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, fp)
    trainer.run([0, 1], max_epochs=2)
    first = torch.load(ckpt.path, weights_only=False)
    model_pt = tmp_path / "model.pt"
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(3.0)
    torch.save({"model": net.state_dict()}, model_pt)

    other = dict(fp, datalist="b", items_sha256="def")
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, other)
    target = ckpt.save_dict["model"]
    CheckpointLoader(str(model_pt), {"model": target}).attach(trainer)
    trainer.run([0, 1], max_epochs=1)
    assert trainer.state.epoch == 1  # trained, from epoch 0: not the first run's finished state
    assert torch.all(target.weight == 3.0)  # from model.pt
    assert torch.load(ckpt.path, weights_only=False)["run_fingerprint"] == other
    previous = torch.load(tmp_path / "checkpoint_last.previous.pt", weights_only=False)
    assert previous["run_fingerprint"] == first["run_fingerprint"] == fp
    # without the option, the refusal stands
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, fp)
    ckpt.start_from_loader = False
    CheckpointLoader(str(model_pt), {"model": ckpt.save_dict["model"]}).attach(trainer)
    with pytest.raises(ValueError, match="other data"):
        trainer.run([0, 1], max_epochs=3)
