"""2 CPU processes (gloo) + DDP compute the loss and gradients of one process on the whole batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from monai_contrastive.losses import ECDF, AdaptiveMarginContrastiveLoss, AdaptiveTripletLoss, NPairLoss

N_SAMPLES, VIEWS, DIM = 8, 2, 6


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, VIEWS, DIM, generator=g)
    y = torch.rand(N_SAMPLES, generator=g)
    y[3] = y[5]  # equal labels on different ranks must be positives across ranks
    return x, y


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(DIM, 4)


def _loss(name):
    return {"adacon": AdaptiveMarginContrastiveLoss, "npair": NPairLoss, "triplet": AdaptiveTripletLoss}[name]()


def _step(model, loss_fn, x, y, ecdf, ids):
    z = F.normalize(model(x.reshape(-1, DIM)), dim=1)
    yy = y.repeat_interleave(VIEWS)
    return loss_fn(z, ecdf(yy), ids.repeat_interleave(VIEWS), yy)


def _worker(rank, world, init_file, out_dir, name):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, y = _data()
    ecdf = ECDF(y.tolist())
    model = torch.nn.parallel.DistributedDataParallel(_model())
    per = N_SAMPLES // world
    sl = slice(rank * per, (rank + 1) * per)
    loss = _step(model, _loss(name), x[sl], y[sl], ecdf, torch.arange(per))
    loss.backward()
    torch.save(
        {"loss": loss.detach(), "grads": [p.grad for p in model.parameters()]}, os.path.join(out_dir, f"{rank}.pt")
    )
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["adacon", "npair", "triplet"])
def test_ddp_matches_single_process(tmp_path, name):
    x, y = _data()
    model = _model()
    loss = _step(model, _loss(name), x, y, ECDF(y.tolist()), torch.arange(N_SAMPLES))
    loss.backward()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), name), nprocs=2, join=True)
    for rank in range(2):
        out = torch.load(tmp_path / f"{rank}.pt")
        assert out["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        for g_ddp, p in zip(out["grads"], model.parameters()):
            torch.testing.assert_close(g_ddp, p.grad, rtol=1e-4, atol=1e-6)
