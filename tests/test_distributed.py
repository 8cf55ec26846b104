"""2 CPU processes (gloo) + DDP compute what one process computes on the whole batch.

One ``mp.spawn`` runs every check of ``CHECKS`` in the same 2 workers. A check is a function ``(rank, world) ->
dict`` of tensors (or lists of tensors) that uses rank ``rank``'s slice of the batch; ``world == 1`` (no process
group) is the single-process reference on the whole batch. Each worker saves a check's result to
``<out_dir>/<name>_<rank>.pt`` and the test compares it with the reference. To add a check, append
``(name, function)`` to ``CHECKS``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import DataLoader

from monai_contrastive.engines import MultiViewTrainer, PrepareViewBatch
from monai_contrastive.handlers import MomentumUpdate, QueueUpdate
from monai_contrastive.losses import (
    ECDF,
    AdaptiveMarginContrastiveLoss,
    AdaptiveTripletLoss,
    InfoNCELoss,
    MultiTermLoss,
    NPairLoss,
)
from monai_contrastive.networks import ContrastiveNet, MomentumContrastNet, ProjectionHead

N_SAMPLES, VIEWS, DIM = 8, 2, 6
WORLD = 2
TOLERANCE = {"loss": {"rtol": 1e-5, "atol": 1e-12}}  # per result key; others: gradients
DEFAULT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, VIEWS, DIM, generator=g)
    y = torch.rand(N_SAMPLES, generator=g)
    y[3] = y[5]  # equal labels on different ranks must be positives across ranks
    return x, y


def _model(world: int) -> torch.nn.Module:
    torch.manual_seed(1)
    model = torch.nn.Linear(DIM, 4)
    return torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model


def _local(rank: int, world: int) -> slice:
    per = N_SAMPLES // world
    return slice(rank * per, (rank + 1) * per)


def _loss_check(loss_cls: type, rank: int, world: int) -> dict:
    """Loss and parameter gradients of a contrastive loss on the rank's samples (all views, local sample ids)."""
    x, y = _data()
    ecdf = ECDF(y.tolist())
    model = _model(world)
    sl = _local(rank, world)
    x, y = x[sl], y[sl]
    z = F.normalize(model(x.reshape(-1, DIM)), dim=1)
    yy = y.repeat_interleave(VIEWS)
    ids = torch.arange(len(y)).repeat_interleave(VIEWS)
    loss = loss_cls()(z, ecdf(yy), ids, yy)
    loss.backward()
    return {"loss": loss.detach(), "grads": [p.grad for p in model.parameters()]}


def _moco_check(rank: int, world: int) -> dict:
    """One MoCo step through the trainer: the queue takes the keys of every rank (in rank order), and the query and
    momentum-updated key encoders equal those of one process on the whole batch."""
    torch.manual_seed(2)
    enc = ContrastiveNet(torch.nn.Linear(DIM, 5), heads={"embedding": ProjectionHead(5, 0, 4)})
    net = MomentumContrastNet(enc, dim=4, queue_size=3 * N_SAMPLES // 2, momentum=0.9)
    network = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    x, _ = _data()
    items = [{"image": x[i, 0], "image_2": x[i, 1]} for i in range(N_SAMPLES)[_local(rank, world)]]
    queue0 = net.queue.clone()
    keys = []
    trainer = MultiViewTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(items, batch_size=len(items)),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.5),
        loss_function=MultiTermLoss({"moco": {"loss": InfoNCELoss(0.07), "inputs": ["query", "key", "queue"]}}),
        prepare_batch=PrepareViewBatch(network_kwargs={"key_input": "image_2"}),
        train_handlers=[MomentumUpdate(network), QueueUpdate(network)],
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: keys.append(e.state.output["pred"]["key"]))
    trainer.run()
    # the queue: the initial entries, then the global batch's keys from slot 0 (rank 0's first)
    n = N_SAMPLES
    assert torch.equal(net.queue[n:], queue0[n:]) and int(net.queue_ptr) == n
    return {
        "queue": net.queue.clone(),
        "query_params": [p.detach().clone() for p in net.encoder.parameters()],
        "key_params": [p.detach().clone() for p in net.key_encoder.parameters()],
        "local_keys_in_queue": torch.tensor(all(any(torch.allclose(k, q) for q in net.queue[:n]) for k in keys[0])),
    }


def _unequal_batches_check(rank: int, world: int) -> dict:
    """Ranks with different batch sizes: every rank gets a ValueError that says so (not an abort inside gloo)."""
    if world == 1:
        return {"raised": torch.tensor(True)}
    g = torch.Generator().manual_seed(rank)
    z = F.normalize(torch.randn(4 + 2 * rank, DIM, generator=g), dim=1)
    phi = torch.rand(z.shape[0], generator=g)
    try:
        AdaptiveMarginContrastiveLoss()(z, phi, torch.arange(z.shape[0]), phi)
    except ValueError as e:
        return {"raised": torch.tensor("different batch sizes ([4, 6]" in str(e))}
    return {"raised": torch.tensor(False)}


def _prepare(marker: str, rank: int, fail: bool = False) -> str:
    """Stands for a preparation step (demo data, video cache): writes ``marker`` once, says who found it made."""
    if fail:
        raise ValueError("video 'x.avi' is unreadable")
    if os.path.exists(marker):
        return f"rank {rank} found it"
    with open(marker, "w") as f:
        f.write(str(rank))
    return f"rank {rank} made it"


def _rank_zero_first_check(rank: int, world: int) -> dict:
    """``rank_zero_first``: rank 0 prepares while rank 1 (which arrives first) waits, then rank 1 finds it made; an
    error on rank 0 reaches rank 1 as a RuntimeError that quotes it (not a hang at a barrier)."""
    from monai_contrastive.distributed import rank_zero_first

    if world == 1:
        return {"ordered": torch.tensor(True), "failure_shared": torch.tensor(True)}
    folder = os.environ["RANK_ZERO_FIRST_DIR"]
    if rank == 0:
        time.sleep(0.5)
    ok = rank_zero_first(_prepare, os.path.join(folder, "marker"), rank)
    try:
        rank_zero_first(_prepare, os.path.join(folder, "marker2"), rank, fail=rank == 0)
        failed = "no error"
    except Exception as e:
        failed = f"{type(e).__name__}: {e}"
    error = "ValueError: video 'x.avi' is unreadable"
    expected = error if rank == 0 else f"RuntimeError: _prepare failed on rank 0: {error}"
    made = open(os.path.join(folder, "marker")).read() == "0"
    return {
        "ordered": torch.tensor(made and ok == f"rank {rank} {'made' if rank == 0 else 'found'} it"),
        "failure_shared": torch.tensor(failed == expected and not os.path.exists(os.path.join(folder, "marker2"))),
    }


CHECKS: list[tuple[str, Callable[[int, int], dict]]] = [
    ("adacon", functools.partial(_loss_check, AdaptiveMarginContrastiveLoss)),
    ("npair", functools.partial(_loss_check, NPairLoss)),
    ("triplet", functools.partial(_loss_check, AdaptiveTripletLoss)),
    ("moco", _moco_check),
    ("unequal_batches", _unequal_batches_check),
    ("rank_zero_first", _rank_zero_first_check),
]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name, check in CHECKS:
            torch.save(check(rank, world), os.path.join(out_dir, f"{name}_{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_matches_single_process(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK_ZERO_FIRST_DIR", str(tmp_path))
    mp.spawn(_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for name, check in CHECKS:
        expected = check(0, 1)
        for rank in range(WORLD):
            out = torch.load(tmp_path / f"{name}_{rank}.pt", weights_only=True)
            assert out.keys() == expected.keys(), name
            for key, value in expected.items():
                torch.testing.assert_close(
                    out[key],
                    value,
                    **TOLERANCE.get(key, DEFAULT_TOLERANCE),
                    msg=lambda m, where=f"{name}, rank {rank}, {key}": f"{where}: {m}",
                )


def test_rank_zero_first_without_process_group_just_runs(tmp_path):
    from monai_contrastive.distributed import rank_zero_first

    assert rank_zero_first(_prepare, str(tmp_path / "marker"), 0) == "rank 0 made it"
    with pytest.raises(ValueError, match="x.avi"):
        rank_zero_first(_prepare, str(tmp_path / "marker"), 0, fail=True)
