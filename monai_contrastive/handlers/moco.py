"""Ignite handlers of Momentum Contrast: the key encoder's EMA update and the queue of negatives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys as Keys

from monai_contrastive.distributed import all_gather_no_grad

__all__ = ["MomentumUpdate", "QueueUpdate"]


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if hasattr(network, "module") else network


class MomentumUpdate:
    """After every optimiser step: ``theta_k <- m theta_k + (1 - m) theta_q`` (MoCo eq. 2).

    Args:
        network: a :class:`~monai_contrastive.networks.MomentumContrastNet` (or DDP around one).
        momentum: m; None uses the network's.
    """

    def __init__(self, network: torch.nn.Module, momentum: float | None = None) -> None:
        self.network = network
        self.momentum = momentum

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        _unwrap(self.network).momentum_update(self.momentum)


class QueueUpdate:
    """After every step: enqueue this step's keys, gathered from all ranks in rank order (MoCo Algorithm 1).

    Every rank enqueues the same global batch of keys, so the queues of all ranks stay identical and a run on N
    ranks keeps the queue of one process with the N-times batch.

    Args:
        network: a :class:`~monai_contrastive.networks.MomentumContrastNet` (or DDP around one).
        output_transform: ``engine.state.output -> keys (B, D)``; default ``output["pred"]["key"]``.
    """

    def __init__(self, network: torch.nn.Module, output_transform: Callable[[Any], torch.Tensor] | None = None) -> None:
        self.network = network
        self.output_transform = output_transform or (lambda output: output[Keys.PRED]["key"])

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        keys = self.output_transform(engine.state.output)
        _unwrap(self.network).enqueue(all_gather_no_grad(keys.detach()))
