"""Multi-task regression + contrastive objective (AdaCon, Dai et al., IEEE TMI, eq. 8)."""

from __future__ import annotations

import torch
from torch import nn

from monai_contrastive.losses.ecdf import ECDF

__all__ = ["MultiTaskRegressionLoss", "regression_loss"]


def regression_loss(name: str | nn.Module, delta: float = 1.0) -> nn.Module:
    """``"l1"``, ``"mse"`` or ``"huber"`` (with ``delta``, e.g. 0.05 for BMD, 4 for LVEF in Tables III/X)."""
    if isinstance(name, nn.Module):
        return name
    key = str(name).lower()
    if key in ("l1", "mae"):
        return nn.L1Loss()
    if key in ("mse", "l2"):
        return nn.MSELoss()
    if key in ("huber", "smooth_l1"):
        return nn.HuberLoss(delta=delta)
    raise ValueError(f"unknown regression loss {name!r}; expected 'l1', 'mse' or 'huber'.")


class MultiTaskRegressionLoss(nn.Module):
    """``L_total = gamma_reg * L_reg + gamma_con * L_con`` (eq. 8) on the outputs of a multi-view batch.

    Called by :class:`monai_contrastive.engines.MultiViewTrainer` as ``loss(outputs, batch)`` where ``outputs`` is the
    network's dict and ``batch`` the flattened batch (every view a row):

    - ``outputs["pred"]`` ``(N, 1)`` regression output, ``outputs["embedding"]`` ``(N, D)`` L2-normalised projection;
    - ``batch[label_key]`` ``(N,)`` labels, ``batch["sample_id"]`` ``(N,)`` sample ids, ``batch["view"]`` ``(N,)``
      view index (0 for the first view).

    Returns ``(total, {"loss_reg": ..., "loss_con": ...})``. A weight of 0 (or a ``None`` loss) skips that branch, which
    gives the two stages of the two-stage scheme (Tables V and XII) and the regression-only baseline.

    Args:
        regression: ``"l1"``, ``"mse"``, ``"huber"`` or a module ``(pred, target) -> loss``; None for no regression.
        contrastive: a loss ``(embeddings, ecdf, ids, labels) -> loss`` such as
            :class:`~monai_contrastive.losses.AdaptiveMarginContrastiveLoss`; None for regression only.
        ecdf: the ECDF fitted on the training labels (eq. 5); required when ``contrastive`` is given.
        gamma_reg: weight of the regression loss (1 in the paper).
        gamma_con: weight of the contrastive loss (0.005 for BMD, 0.75 for LVEF).
        huber_delta: delta of the Huber loss.
        regression_views: ``"all"`` supervises every augmented view (batch augmentation, BMD); ``"first"`` only the
            first view (the authors' LVEF code).
        label_key: key of the labels in ``batch``.
    """

    def __init__(
        self,
        regression: str | nn.Module | None = "l1",
        contrastive: nn.Module | None = None,
        ecdf: ECDF | None = None,
        gamma_reg: float = 1.0,
        gamma_con: float = 0.005,
        huber_delta: float = 1.0,
        regression_views: str = "all",
        label_key: str = "label",
    ) -> None:
        super().__init__()
        self.regression = regression_loss(regression, huber_delta) if regression is not None else None
        self.contrastive = contrastive
        self.ecdf = ecdf
        if contrastive is not None and gamma_con != 0 and ecdf is None:
            raise ValueError("MultiTaskRegressionLoss: a contrastive loss needs the ECDF of the training labels.")
        if regression_views not in ("all", "first"):
            raise ValueError(f"regression_views must be 'all' or 'first', got {regression_views!r}.")
        self.gamma_reg = float(gamma_reg)
        self.gamma_con = float(gamma_con)
        self.regression_views = regression_views
        self.label_key = label_key

    def forward(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.label_key not in batch:
            raise KeyError(f"MultiTaskRegressionLoss: batch has no {self.label_key!r} (keys: {sorted(batch)}).")
        labels = batch[self.label_key].reshape(-1)
        if not labels.is_floating_point():
            labels = labels.float()
        terms: dict[str, torch.Tensor] = {}
        total = None
        if self.regression is not None and self.gamma_reg != 0:
            pred = outputs["pred"].reshape(-1).float()
            target = labels.to(pred.dtype)
            if self.regression_views == "first" and "view" in batch:
                keep = batch["view"].reshape(-1) == 0
                pred, target = pred[keep], target[keep]
            terms["loss_reg"] = self.regression(pred, target)
            total = self.gamma_reg * terms["loss_reg"]
        if self.contrastive is not None and self.gamma_con != 0:
            ecdf = self.ecdf(labels)  # type: ignore[misc]
            terms["loss_con"] = self.contrastive(outputs["embedding"], ecdf, batch.get("sample_id"), labels)
            weighted = self.gamma_con * terms["loss_con"]
            total = weighted if total is None else total + weighted
        if total is None:
            raise ValueError("MultiTaskRegressionLoss: both branches are switched off (weights 0 or losses None).")
        return total, terms
