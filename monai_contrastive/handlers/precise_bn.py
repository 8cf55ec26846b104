"""Recompute BatchNorm statistics before evaluation ("precise BN", Wu & Johnson, arXiv:2105.07576)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

import torch
from ignite.engine import Engine, Events

__all__ = ["PreciseBatchNorm", "update_bn_stats"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def update_bn_stats(
    network: torch.nn.Module,
    loader: Iterable,
    num_batches: int = 8,
    image_key: str = "image",
    device: str | torch.device | None = None,
) -> int:
    """Reset every BatchNorm's running mean/var and re-estimate them as the exact average over ``num_batches``.

    Returns the number of batches used. The network's train/eval mode is restored afterwards.
    """
    bns = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    was_training = network.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches seen
    network.train()
    if device is None:
        device = next(network.parameters()).device
    n = 0
    for batch in itertools.islice(loader, num_batches):
        x = batch[image_key] if isinstance(batch, dict) else batch[0]
        network(torch.as_tensor(x).to(device))
        n += 1
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    network.train(was_training)
    return n


class PreciseBatchNorm:
    """Attach to the trainer before the ``ValidationHandler``: re-estimate BatchNorm statistics on single-view
    training batches every ``interval`` epochs (and at the end).

    Why: with batch augmentation (AdaCon: 8 samples x 8 views per batch) the views of one sample are correlated, so
    batch variances underestimate the population variance and the exponential running statistics, taken from those
    batches while a from-scratch network changes fast, do not match the weights. Evaluation then drifts far from
    training behaviour (seen on the BMD demo: eval R² of -100 while train-mode R² was 0.3). Recomputing the
    statistics on ordinary batches of independent samples (augmented as in training, one view each) fixes that.
    Training itself is unchanged.

    Args:
        network: the network.
        loader: a loader of single-view training batches (dicts with ``image_key``).
        num_batches: batches to average over; 0 disables the handler.
        interval: epochs between updates (use the validation interval).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        loader: Iterable,
        num_batches: int = 8,
        interval: int = 1,
        image_key: str = "image",
    ) -> None:
        self.network = network
        self.loader = loader
        self.num_batches = num_batches
        self.interval = max(1, int(interval))
        self.image_key = image_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        if self.num_batches < 1:  # disabled (e.g. ``precise_bn_batches: 0`` in a bundle config)
            return
        net = self.network.module if hasattr(self.network, "module") else self.network
        n = update_bn_stats(net, self.loader, self.num_batches, self.image_key)
        logger.debug(f"precise BN: statistics re-estimated on {n} batches")
