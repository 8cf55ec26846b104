"""Gathering of contrastive-loss inputs across ranks.

A contrastive loss on N ranks must see the embeddings of the N-times batch. ``torch.distributed.nn.functional``'s
``all_gather`` is differentiable and sums the gradient of every rank's copy back to the rank that owns the slice.
The losses here compute the *same global loss* on every rank, so each rank's local embeddings receive
``world_size * dL/dz``; DistributedDataParallel then averages parameter gradients over ranks, which gives exactly
``dL/dtheta`` of a single process that saw the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "all_gather_with_grad",
    "all_gather_no_grad",
    "check_equal_rows",
    "gather_for_loss",
    "rank_zero_first",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``(n, ...)`` of every rank along dim 0, keeping gradients to every rank's slice."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor that needs no gradient (labels, ids, intensities) of every rank along dim 0."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def check_equal_rows(x: torch.Tensor, what: str = "contrastive loss") -> None:
    """Raise on every rank when the ranks hold different numbers of rows: ``all_gather`` needs equal shapes and would
    otherwise abort inside the backend (gloo) or hang (NCCL) with no word about the cause.

    Raises:
        ValueError: the per-rank row counts differ (the message lists them).
    """
    if not is_distributed():
        return
    local = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    counts = [int(t) for t in sizes]
    if len(set(counts)) > 1:
        raise ValueError(
            f"{what}: the ranks hold different batch sizes ({counts} rows on ranks 0..{len(counts) - 1}; this is rank "
            f"{dist.get_rank()}). Gathering across ranks needs equal per-rank batches: use drop_last=True in the "
            "training DataLoader and a DistributedSampler with even_divisible=True (or drop_last=True)."
        )


def gather_for_loss(
    embeddings: torch.Tensor, *aux: torch.Tensor | None, local_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Gather embeddings (with gradient) and auxiliary per-row tensors (without), all ``(n, ...)`` per rank.

    ``local_ids`` are sample ids unique only within a rank (e.g. the index of a sample in its local batch); they are
    made globally unique by offsetting with the rank, so views of one sample stay positives and samples of different
    ranks never collide. Returns ``(embeddings, *aux, ids)`` (``ids`` is None when ``local_ids`` is None).

    Raises:
        ValueError: the ranks hold different numbers of rows (see :py:func:`check_equal_rows`).
    """
    if not is_distributed():
        return (embeddings, *aux, local_ids)
    check_equal_rows(embeddings)
    gathered = [all_gather_no_grad(a) if a is not None else None for a in aux]
    ids = None
    if local_ids is not None:
        ids = local_ids.long() + (int(dist.get_rank()) << 32)
        ids = all_gather_no_grad(ids)
    return (all_gather_with_grad(embeddings), *gathered, ids)


def rank_zero_first(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on rank 0 first, then on the other ranks: for preparation that writes to disk (a
    generated demo dataset, a decoded-frame cache, fitted statistics) and would collide if every rank wrote at once.
    When the others run ``fn`` they find its outputs made, so ``fn`` must reuse what exists (every such function
    here does) and each rank gets the result.

    Without a process group (one process) ``fn`` simply runs. In a distributed run rank 0 tells the others whether
    it succeeded (``broadcast_object_list``, which every backend supports): when it failed they raise instead of
    waiting at a barrier that rank 0 never reaches.

    Raises:
        RuntimeError: on ranks > 0, ``fn`` failed on rank 0 (its error is quoted; rank 0 raises the error itself).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return fn(*args, **kwargs)
    if dist.get_rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            dist.broadcast_object_list([f"{type(e).__name__}: {e}"], src=0)
            raise
        dist.broadcast_object_list([None], src=0)
        return result
    status: list[Any] = [None]
    dist.broadcast_object_list(status, src=0)
    if status[0] is not None:
        raise RuntimeError(f"{getattr(fn, '__qualname__', repr(fn))} failed on rank 0: {status[0]}")
    return fn(*args, **kwargs)
