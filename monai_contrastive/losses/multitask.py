"""Multi-task regression + contrastive objective (AdaCon, Dai et al., IEEE TMI, eq. 8)."""

from __future__ import annotations

import torch
from torch import nn

from monai_contrastive.losses.ecdf import ECDF
from monai_contrastive.losses.multiterm import LossTerm, MultiTermLoss

__all__ = ["FlatRegressionLoss", "MultiTaskRegressionLoss", "regression_loss"]


def regression_loss(name: str | nn.Module, delta: float = 1.0) -> nn.Module:
    """``"l1"``, ``"mse"`` or ``"huber"`` (with ``delta``, e.g. 0.05 for BMD, 4 for LVEF: AdaCon §IV-A4/§IV-B4)."""
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


class FlatRegressionLoss(nn.Module):
    """A regression loss on flattened predictions and targets: ``(N, 1)`` vs ``(N,)`` must not broadcast to
    ``(N, N)``. Predictions are compared in float32 (or their own precision if higher), targets cast to it."""

    def __init__(self, loss: str | nn.Module = "l1", delta: float = 1.0) -> None:
        super().__init__()
        self.loss = regression_loss(loss, delta)

    def forward(self, pred, target):
        pred = pred.reshape(-1)
        pred = pred if pred.dtype == torch.float64 else pred.float()
        target = target.reshape(-1).to(pred.dtype)
        if pred.shape != target.shape:
            raise ValueError(f"regression: {pred.shape[0]} predictions for {target.shape[0]} labels.")
        return self.loss(pred, target)


class MultiTaskRegressionLoss(MultiTermLoss):
    """``L_total = gamma_reg * L_reg + gamma_con * L_con`` (eq. 8): a :class:`MultiTermLoss` with two terms.

    - ``loss_reg``: ``regression(outputs["pred"], batch[label_key])`` on every view row, or on the first view only;
    - ``loss_con``: ``contrastive(outputs["embedding"], ecdf(batch[label_key]), batch["sample_id"], batch[label_key])``.

    ``outputs["pred"]`` ``(N, 1)``, ``outputs["embedding"]`` ``(N, D)`` L2-normalised, labels ``(N,)``, one row per
    view (the batch laid out by :class:`~monai_contrastive.engines.PrepareViewBatch` with ``label`` a sample key).
    Returns ``(total, {"loss_reg": ..., "loss_con": ...})``. A weight of 0 (or a
    ``None`` loss) drops that term, which gives the two stages of the two-stage scheme (Tables V and XII) and the
    regression-only baseline.

    Args:
        regression: ``"l1"``, ``"mse"``, ``"huber"`` or a module ``(pred, target) -> loss``; None for no regression.
        contrastive: a loss ``(embeddings, ecdf, ids, labels) -> loss`` such as
            :class:`~monai_contrastive.losses.AdaptiveMarginContrastiveLoss`; None for regression only.
        ecdf: the ECDF fitted on the training labels (eq. 5); required when ``contrastive`` is given.
        gamma_reg: weight of the regression loss (1 in the paper, §III-C).
        gamma_con: weight of the contrastive loss (0.005 for BMD, Table IV; 0.75 for LVEF, Table XI).
        huber_delta: delta of the Huber loss.
        regression_views: ``"all"`` supervises every augmented view (ours, for BMD's batch augmentation: the paper
            does not say); ``"first"`` only the first view (the authors' LVEF code).
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
        if contrastive is not None and gamma_con != 0 and ecdf is None:
            raise ValueError("MultiTaskRegressionLoss: a contrastive loss needs the ECDF of the training labels.")
        if regression_views not in ("all", "first"):
            raise ValueError(f"regression_views must be 'all' or 'first', got {regression_views!r}.")
        terms = {}
        if regression is not None and gamma_reg != 0:
            views = [0] if regression_views == "first" else None
            reg = FlatRegressionLoss(regression, huber_delta)
            terms["loss_reg"] = LossTerm(reg, gamma_reg, ["pred", label_key], views=views)
        if contrastive is not None and gamma_con != 0:
            terms["loss_con"] = LossTerm(
                contrastive, gamma_con, ["embedding", [ecdf, label_key], "sample_id", label_key]
            )
        if not terms:
            raise ValueError("MultiTaskRegressionLoss: both branches are switched off (weights 0 or losses None).")
        super().__init__(terms)
        self.gamma_reg = float(gamma_reg)
        self.gamma_con = float(gamma_con)
        self.regression_views = regression_views
        self.ecdf = ecdf
        self.label_key = label_key
