"""Momentum Contrast (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020)."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MomentumContrastNet"]


class MomentumContrastNet(nn.Module):
    """A query encoder, its momentum (EMA) key encoder and a queue of negative keys: the model side of MoCo.

    ``forward(x, key_input=None)``: the query encoder's outputs (a dict; its ``embedding_key`` output, L2-normalised,
    is the query). With ``key_input`` (the second view, e.g. ``PrepareViewBatch(network_kwargs={"key_input":
    "image_2"})``) it adds ``query`` ``(B, D)``, ``key`` ``(B, D)`` (key encoder, no gradient) and ``queue``
    ``(K, D)`` (a detached copy of the negatives before this step's keys are enqueued), the inputs of
    :class:`~monai_contrastive.losses.InfoNCELoss`. The key encoder is updated by
    :class:`~monai_contrastive.handlers.MomentumUpdate` (``theta_k <- m theta_k + (1 - m) theta_q``, MoCo eq. 2) and
    the queue by :class:`~monai_contrastive.handlers.QueueUpdate` (keys gathered from all ranks), after each step.
    Queue and pointer are buffers, so a resumed run continues with its queue.

    Under DistributedDataParallel the key encoder sees each rank's local batch; MoCo shuffles batch-norm across
    ranks to stop the key encoder's BN statistics from leaking which key belongs to which query. The U-Nets of the
    segmentation bundles use instance normalisation (per-sample statistics, no leak), so there is nothing to shuffle;
    with a batch-norm encoder use ``SyncBatchNorm`` or small per-rank batches, and know that the leak is possible.

    Args:
        encoder: the query encoder, returning a dict with ``embedding_key`` (e.g. a
            :class:`~monai_contrastive.networks.ContrastiveNet` with a pooled
            :class:`~monai_contrastive.networks.ProjectionHead`).
        dim: embedding size D (128 in MoCo and in the LRC thesis, §3.1.1).
        queue_size: K, number of negative keys (65,536 in MoCo; the LRC thesis gives none); a multiple of the global
            batch keeps the enqueue contiguous, any size works.
        momentum: m of eq. 2 (0.999 in MoCo; the LRC thesis gives none).
        embedding_key: the encoder output that is the embedding.
    """

    def __init__(
        self,
        encoder: nn.Module,
        dim: int = 128,
        queue_size: int = 65536,
        momentum: float = 0.999,
        embedding_key: str = "embedding",
    ) -> None:
        super().__init__()
        if queue_size < 1 or not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"MomentumContrastNet: queue_size >= 1 and 0 <= momentum <= 1; got {queue_size}, {momentum}."
            )
        self.encoder = encoder
        self.key_encoder = copy.deepcopy(encoder)
        for p in self.key_encoder.parameters():
            p.requires_grad_(False)
        self.momentum = float(momentum)
        self.embedding_key = embedding_key
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _embed(self, encoder: nn.Module, x: torch.Tensor) -> tuple[dict, torch.Tensor]:
        out = encoder(x)
        if not isinstance(out, Mapping) or self.embedding_key not in out:
            got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
            raise KeyError(
                f"MomentumContrastNet: the encoder must return a dict with {self.embedding_key!r}, got {got}."
            )
        return dict(out), F.normalize(out[self.embedding_key], dim=1)

    def forward(self, x: torch.Tensor, key_input: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out, q = self._embed(self.encoder, x)
        if key_input is None:
            return out
        with torch.no_grad():
            _, k = self._embed(self.key_encoder, key_input)
        out.update({"query": q, "key": k.detach(), "queue": self.queue.clone().detach()})
        return out

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` for every parameter (MoCo eq. 2).

        Buffers (batch-norm statistics) are not averaged: the key encoder's own forward passes update them, as in
        the MoCo reference code."""
        m = self.momentum if momentum is None else float(momentum)
        q_params = [p.detach() for p in self.encoder.parameters()]
        k_params = list(self.key_encoder.parameters())
        torch._foreach_mul_(k_params, m)
        torch._foreach_add_(k_params, q_params, alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``n`` entries of the queue by ``keys`` ``(n, D)`` (FIFO, wrapping around)."""
        size = self.queue.shape[0]
        keys = keys.detach().to(self.queue.dtype)
        if keys.ndim != 2 or keys.shape[1] != self.queue.shape[1]:
            raise ValueError(f"enqueue: keys must be (n, {self.queue.shape[1]}), got {tuple(keys.shape)}.")
        if keys.shape[0] > size:
            keys = keys[-size:]
        n = keys.shape[0]
        idx = (self.queue_ptr + torch.arange(n, device=self.queue.device)) % size
        self.queue[idx] = keys
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
