"""Empirical cumulative distribution function of training labels (AdaCon, Dai et al., IEEE TMI, eq. 5)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["ECDF"]


class ECDF(nn.Module):
    """Empirical CDF fitted once on the training labels, eq. 5: ``phi(y) = 1/N * sum_j 1[y_j <= y]``.

    The sorted training labels are kept in the ``values`` buffer, so the ECDF is part of ``state_dict()`` and is saved
    in checkpoints next to the network. Inference and evaluation load it and never refit it on other data.

    Evaluation uses ``torch.searchsorted(..., right=True)``, i.e. the count of training labels ``<= y``, divided by N,
    so the output lies in ``[0, 1]`` and values outside the training range map to 0 or 1.

    Args:
        labels: training labels ``(N,)`` to fit on; may be left out and fitted later with :py:meth:`fit` or loaded
            with ``load_state_dict``.
    """

    values: torch.Tensor

    def __init__(self, labels: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("values", torch.empty(0, dtype=torch.float64))
        if labels is not None:
            self.fit(labels)

    @property
    def fitted(self) -> bool:
        return self.values.numel() > 0

    def fit(self, labels: Iterable[float] | torch.Tensor) -> ECDF:
        """Fit on ``labels`` (any iterable of numbers). Raises ``ValueError`` for an empty or non-finite input."""
        t = torch.as_tensor(labels if isinstance(labels, torch.Tensor) else list(labels), dtype=torch.float64)
        t = t.detach().reshape(-1).cpu()
        if t.numel() == 0:
            raise ValueError("ECDF.fit: no labels given (empty training set?).")
        bad = ~torch.isfinite(t)
        if bad.any():
            idx = int(bad.nonzero()[0])
            raise ValueError(f"ECDF.fit: label at index {idx} is not finite ({t[idx].item()}).")
        self.values = torch.sort(t).values.to(self.values.device)
        return self

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Evaluate ``phi(y)`` elementwise; output has the shape of ``y`` and dtype float32."""
        if not self.fitted:
            raise RuntimeError("ECDF is not fitted: call fit(training_labels) or load its state_dict first.")
        y = torch.as_tensor(y, device=self.values.device).detach()
        if not y.is_floating_point():
            y = y.to(torch.float64)
        # compare in the query's precision: a float32 label equal to a training label must count as <= it
        counts = torch.searchsorted(self.values.to(y.dtype), y.contiguous(), right=True)
        return (counts.to(torch.float64) / self.values.numel()).to(torch.float32)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):
        # the number of training labels is only known from the checkpoint: resize the buffer before the copy
        key = prefix + "values"
        if key in state_dict:
            self.values = torch.empty_like(state_dict[key], device=self.values.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    def extra_repr(self) -> str:
        if not self.fitted:
            return "fitted=False"
        v = self.values
        mean = float(v.mean())
        sd = float(v.std()) if v.numel() > 1 else math.nan
        return f"n={v.numel()}, min={float(v[0]):.4g}, max={float(v[-1]):.4g}, mean={mean:.4g}, sd={sd:.4g}"
