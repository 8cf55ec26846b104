"""Inferers for networks that return a dict of named outputs."""

from __future__ import annotations

import torch
from monai.inferers import Inferer

__all__ = ["SelectOutputInferer"]


class SelectOutputInferer(Inferer):
    """Run the network and return one named output (``pred`` by default) for MONAI evaluators and metrics.

    With ``average_views=True`` the input carries a view axis ``(B, V, ...)`` (e.g. all clips of a video, or test-time
    augmentations): the ``B * V`` views go through the network in chunks of ``views_per_batch`` and the output is
    averaged over V, giving ``(B, ...)``.
    """

    def __init__(self, key: str = "pred", average_views: bool = False, views_per_batch: int = 64) -> None:
        super().__init__()
        self.key = key
        self.average_views = average_views
        self.views_per_batch = views_per_batch

    def _run(self, x: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        out = network(x, *args, **kwargs)
        if isinstance(out, dict):
            if self.key not in out:
                raise KeyError(f"network output has no {self.key!r} (outputs: {sorted(out)}).")
            out = out[self.key]
        return out

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        if not self.average_views:
            return self._run(inputs, network, *args, **kwargs)
        b, v = inputs.shape[:2]
        flat = inputs.reshape(b * v, *inputs.shape[2:])
        outs = [self._run(c, network, *args, **kwargs) for c in torch.split(flat, self.views_per_batch)]
        out = torch.cat(outs, 0)
        return out.reshape(b, v, *out.shape[1:]).mean(1)
