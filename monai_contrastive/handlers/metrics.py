"""Regression metrics over a whole evaluation set: MAE, RMSE and R² (coefficient of determination)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

__all__ = ["RegressionMetric", "RegressionMetricHandler", "regression_metrics"]


class RegressionMetric(CumulativeIterationMetric):
    """MAE, RMSE or R² computed over every sample seen (not averaged per batch or per sample).

    MONAI's ``RMSEMetric`` takes the root per sample, which for one scalar per sample equals the MAE; this metric
    pools the squared errors of the whole set first. R² is ``1 - SS_res / SS_tot`` around the evaluated labels' mean.

    Shapes: ``y_pred`` and ``y`` ``(B,)`` or ``(B, 1)`` (or lists of per-sample tensors).
    """

    def __init__(self, metric_name: str = "mae") -> None:
        super().__init__()
        name = metric_name.lower()
        if name not in ("mae", "rmse", "r2", "mse"):
            raise ValueError(f"metric_name must be 'mae', 'rmse', 'mse' or 'r2', got {metric_name!r}.")
        self.metric_name = name

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        p = torch.as_tensor(y_pred).reshape(y_pred.shape[0], -1).float()
        t = torch.as_tensor(y).reshape(y.shape[0], -1).float()
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {tuple(p.shape)} does not match label shape {tuple(t.shape)}.")
        return torch.stack([p, t], dim=-1)  # (B, C, 2)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ValueError("RegressionMetric: no samples were evaluated.")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from monai.utils import evenly_divisible_all_gather

            data = evenly_divisible_all_gather(data.contiguous(), concat=True)  # every rank scores the whole set
        p, t = data[..., 0].double(), data[..., 1].double()
        err = p - t
        if self.metric_name == "mae":
            out = err.abs().mean()
        elif self.metric_name == "mse":
            out = (err**2).mean()
        elif self.metric_name == "rmse":
            out = (err**2).mean().sqrt()
        else:
            ss_tot = ((t - t.mean(0)) ** 2).sum()
            out = 1.0 - (err**2).sum() / ss_tot if ss_tot > 0 else torch.tensor(float("nan"))
        return out.float()


class RegressionMetricHandler(IgniteMetricHandler):
    """Ignite handler for :class:`RegressionMetric` (use one per metric, e.g. ``val_mae``, ``val_rmse``, ``val_r2``)."""

    def __init__(
        self, metric_name: str = "mae", output_transform: Callable = lambda x: x, save_details: bool = False
    ) -> None:
        super().__init__(
            metric_fn=RegressionMetric(metric_name), output_transform=output_transform, save_details=save_details
        )


def regression_metrics(y_pred, y) -> dict[str, float]:
    """MAE, RMSE and R² of two sequences of numbers (for reports and benchmarks)."""
    p = torch.as_tensor(y_pred, dtype=torch.float64).reshape(-1)
    t = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return {
        "mae": float(err.abs().mean()),
        "rmse": float((err**2).mean().sqrt()),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
    }
