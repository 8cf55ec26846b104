"""InfoNCE with a queue of negatives (MoCo, He et al., CVPR 2020, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["InfoNCELoss"]


class InfoNCELoss(_Loss):
    """``L_q = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k-} exp(q.k- / tau)) )`` (MoCo eq. 1).

    The positive of query i is key i (the other view of the same image, from the momentum encoder); the negatives are
    the queue. Computed as cross-entropy over ``[q.k+, q.queue^T] / tau`` with target 0, in float32 outside
    autocast (``1 / tau = 14.3`` scales the logits).

    Args:
        temperature: tau (0.07 in MoCo and in the LRC thesis, §4.2).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per query).

    Shapes: ``query`` ``(B, D)``, ``key`` ``(B, D)``, ``queue`` ``(K, D)``, all L2-normalised; output a scalar (or
    ``(B,)`` with ``reduction="none"``).
    """

    def __init__(self, temperature: float = 0.07, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        if temperature <= 0:
            raise ValueError(f"InfoNCELoss: temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def forward(self, query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        if query.ndim != 2 or key.shape != query.shape or queue.ndim != 2 or queue.shape[1] != query.shape[1]:
            raise ValueError(
                f"InfoNCELoss: query and key (B, D) and queue (K, D) expected, got {tuple(query.shape)}, "
                f"{tuple(key.shape)}, {tuple(queue.shape)}."
            )
        with torch.autocast(device_type=query.device.type, enabled=False):
            q = query.float()
            l_pos = (q * key.float().detach()).sum(1, keepdim=True)
            l_neg = q @ queue.float().detach().t()
            logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
            target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
            return F.cross_entropy(logits, target, reduction=self.reduction)
