"""Supervised contrastive losses for image regression: AdaCon and the baselines of its Tables II-V.

Dai et al., "Adaptive Contrast for Image Regression in Computer-Aided Disease Assessment", IEEE TMI (AdaCon).
Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (SupCon). Sohn, "Improved Deep Metric Learning with
Multi-class N-pair Loss Objective", NeurIPS 2016. Zheng et al., arXiv:2103.13482 (adaptive triplet loss).

All losses take the L2-normalised embeddings of every view in the batch ``(N, D)``, the ECDF values of the samples'
labels ``(N,)`` (``phi(y)`` of eq. 5, see :class:`monai_contrastive.losses.ECDF`) and optional sample ids ``(N,)``
(views of one sample share an id). Positives of anchor i are the other views of the same sample and every sample
whose label equals y_i (eq. 1: ``P(i) = {j != i: y_j = y_i}``), optionally within a tolerance.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_contrastive.distributed import gather_for_loss

__all__ = ["AdaptiveMarginContrastiveLoss", "SupConLoss", "NPairLoss", "AdaptiveTripletLoss", "positive_mask"]


def positive_mask(
    targets: torch.Tensor, ids: torch.Tensor | None = None, tolerance: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive-pair and self masks ``(N, N)`` (bool).

    ``pos[i, j]`` is True for ``j != i`` when i and j share an id or ``|t_i - t_j| <= tolerance``.
    """
    n = targets.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=targets.device)
    pos = (targets[:, None] - targets[None, :]).abs() <= tolerance
    if ids is not None:
        pos = pos | (ids[:, None] == ids[None, :])
    return pos & ~eye, eye


def _fp32() -> contextlib.ExitStack:
    """Leave autocast on every device (CUDA and CPU): s * cos reaches 150 + 300, and the cosine matrix and the
    exponentials must not be computed in float16/bfloat16 (CPU bf16 autocast gave a relative gradient error of
    1.7e-2)."""
    stack = contextlib.ExitStack()
    for device_type in ("cuda", "cpu"):
        try:
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        except Exception:  # pragma: no cover - a build without this device type
            pass
    return stack


_REDUCTIONS = ("mean", "sum", "none")


def _targets(name: str, labels: torch.Tensor | None, phi: torch.Tensor, tolerance: float) -> torch.Tensor:
    """The values that define positives: the labels; without labels the ECDF values, with a loud warning."""
    if labels is not None:
        return labels.to(phi.dtype)
    warnings.warn(
        f"{name}: no labels given, so positives are the samples with an equal ECDF value (tolerance {tolerance}). "
        "Different labels within one ECDF step (and, with a tolerance, neighbouring ones) then count as positives, "
        "which is not the loss of the paper (eq. 1: equal labels). Pass labels=... (MultiTaskRegressionLoss does).",
        UserWarning,
        stacklevel=3,
    )
    return phi


def _check_reduction(name: str, reduction: str, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"{name}: reduction must be one of {allowed}, got {reduction!r}.")


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float64 stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def _check_inputs(name: str, embeddings: torch.Tensor, *per_row: torch.Tensor | None) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"{name}: embeddings must be (N, D), got shape {tuple(embeddings.shape)}.")
    for t in per_row:
        if t is not None and t.reshape(-1).shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"{name}: per-sample input of shape {tuple(t.shape)} does not match {embeddings.shape[0]} embeddings."
            )


def _prepare(embeddings, ecdf, ids, labels, gather: bool):
    """Flatten the per-row inputs onto the embeddings' device and, under torch.distributed, gather all ranks."""
    ecdf = ecdf.reshape(-1).to(embeddings.device)
    labels = labels.reshape(-1).to(embeddings.device) if labels is not None else None
    ids = ids.reshape(-1).to(embeddings.device) if ids is not None else None
    if gather:
        embeddings, ecdf, labels, ids = gather_for_loss(embeddings, ecdf, labels, local_ids=ids)
    return embeddings, ecdf, labels, ids


class AdaptiveMarginContrastiveLoss(_Loss):
    """AdaCon adaptive-margin contrastive loss (Dai et al., eq. 6, with the margin of eq. 4).

    .. math::
        L = \\frac{1}{|A|} \\sum_{i \\in A} \\frac{-1}{|P(i)|} \\sum_{p \\in P(i)}
            \\log \\frac{\\exp(s \\cos\\theta_{i,p})}{\\sum_{a \\ne i} \\exp(s(\\cos\\theta_{i,a} + d_{i,a}))},
        \\quad d_{i,a} = 2 |\\phi(y_i) - \\phi(y_a)| \\text{ for } a \\notin P(i), \\; 0 \\text{ otherwise}.

    The paper's eq. 6 sums over anchors; like SupCon's and the authors' code we average over the anchors ``A`` that
    have at least one positive (a scale factor only). An anchor without a positive (a single-view batch of unique
    labels) contributes nothing; if no anchor has a positive the loss is an exact zero that still carries a graph.
    The denominator is a log-sum-exp in float32 outside autocast, so the loss stays finite at ``s = 150`` under
    fp16/bf16 mixed precision. With ``margin=False`` (or ``margin_scale=0``) this is exactly SupCon with temperature
    ``1 / s`` (eq. 1).

    Args:
        scale: ``s``, the temperature scaling factor (150 in the authors' published LVEF code; the paper gives no
            value, §III: "usually determined empirically").
        margin: add the adaptive margin of eq. 4 to negatives.
        margin_scale: the factor 2 of eq. 4.
        tolerance: labels (or ECDF values, when no labels are given to ``forward``) within this distance are
            positives. 0 means equal labels, as in the paper.
        gather_distributed: under torch.distributed, gather embeddings (with gradient), ECDF values, labels and ids
            from all ranks so every rank computes the loss of the global batch.
        reduction: "mean" (default) or "none" (per-anchor losses ``(N,)``, 0 for anchors without positives).

    Shapes:
        embeddings ``(N, D)`` L2-normalised; ecdf ``(N,)`` in [0, 1]; ids ``(N,)`` integer, optional;
        labels ``(N,)``, optional (defines positives when given).
    """

    def __init__(
        self,
        scale: float = 150.0,
        margin: bool = True,
        margin_scale: float = 2.0,
        tolerance: float = 0.0,
        gather_distributed: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        _check_reduction(type(self).__name__, reduction, ("mean", "none"))
        self.scale = float(scale)
        self.margin = bool(margin)
        self.margin_scale = float(margin_scale)
        self.tolerance = float(tolerance)
        self.gather_distributed = gather_distributed

    def forward(
        self,
        embeddings: torch.Tensor,
        ecdf: torch.Tensor,
        ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        name = type(self).__name__
        _check_inputs(name, embeddings, ecdf, ids, labels)
        embeddings, ecdf, labels, ids = _prepare(embeddings, ecdf, ids, labels, self.gather_distributed)
        with _fp32():
            z = _upcast(embeddings)
            phi = ecdf.to(z.dtype)
            pos, eye = positive_mask(_targets(name, labels, phi, self.tolerance), ids, self.tolerance)
            cos = z @ z.t()
            logits = self.scale * cos
            if self.margin and self.margin_scale != 0:
                # eq. 4; d = 0 for positives (Appendix A, eq. 14)
                d = self.margin_scale * (phi[:, None] - phi[None, :]).abs()
                logits = logits + self.scale * d.masked_fill(pos, 0.0)
            log_denom = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
            # a row with no other sample (N = 1) has an empty denominator (-inf); it has no positive either
            log_denom = log_denom.masked_fill(~torch.isfinite(log_denom), 0.0)
            log_prob = self.scale * cos - log_denom[:, None]
            n_pos = pos.sum(1)
            # where, not a product with the mask: 0 * inf would give NaN
            per_anchor = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
            valid = n_pos > 0
            if self.reduction == "none":
                return torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
            if not valid.any():
                return (z * 0.0).sum()
            return per_anchor[valid].mean()


class SupConLoss(AdaptiveMarginContrastiveLoss):
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020; AdaCon eq. 1), each unique label a class.

    The same computation as :class:`AdaptiveMarginContrastiveLoss` with the margin switched off; ``temperature``
    is ``1 / s``. Same shapes; the ``ecdf`` argument only defines positives when no labels are given.
    """

    def __init__(
        self,
        temperature: float | None = None,
        scale: float = 150.0,
        tolerance: float = 0.0,
        gather_distributed: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            scale=1.0 / temperature if temperature else scale,
            margin=False,
            tolerance=tolerance,
            gather_distributed=gather_distributed,
            reduction=reduction,
        )


class NPairLoss(_Loss):
    """Multi-class N-pair loss (Sohn, NeurIPS 2016, eq. 6) over all views, each unique label a class.

    For every anchor i and positive p: ``log(1 + sum_{q in Q(i)} exp(s (cos_iq - cos_ip)))``, averaged over the
    positives of i and over anchors with a positive. Unlike SupCon the other positives are not in the denominator.
    Computed as ``softplus(logsumexp_q(s cos_iq) - s cos_ip)`` in O(N^2) memory. Shapes as in AdaCon.

    ``reduction``: ``"mean"`` over anchors with a positive (default), ``"sum"`` over them, or ``"none"`` for the
    per-anchor losses ``(N,)`` (0 for anchors without a positive).
    """

    def __init__(
        self, scale: float = 150.0, tolerance: float = 0.0, gather_distributed: bool = True, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=reduction)
        _check_reduction(type(self).__name__, reduction)
        self.scale = float(scale)
        self.tolerance = float(tolerance)
        self.gather_distributed = gather_distributed

    def forward(self, embeddings, ecdf, ids=None, labels=None) -> torch.Tensor:
        _check_inputs(type(self).__name__, embeddings, ecdf, ids, labels)
        embeddings, ecdf, labels, ids = _prepare(embeddings, ecdf, ids, labels, self.gather_distributed)
        with _fp32():
            z = _upcast(embeddings)
            pos, eye = positive_mask(
                _targets(type(self).__name__, labels, ecdf.to(z.dtype), self.tolerance), ids, self.tolerance
            )
            neg = ~pos & ~eye
            s_cos = self.scale * (z @ z.t())
            lse_neg = torch.logsumexp(s_cos.masked_fill(~neg, float("-inf")), dim=1)
            per_pair = F.softplus(lse_neg[:, None] - s_cos)  # anchors with no negative: softplus(-inf) = 0
            n_pos = pos.sum(1)
            valid = n_pos > 0
            per_anchor = torch.where(pos, per_pair, torch.zeros_like(per_pair)).sum(1) / n_pos.clamp(min=1)
            if self.reduction == "none":
                return torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
            if not valid.any():
                return (z * 0.0).sum()
            if self.reduction == "sum":
                return per_anchor[valid].sum()
            return per_anchor[valid].mean()


class AdaptiveTripletLoss(_Loss):
    """Adaptive-margin triplet loss over all valid triplets (Zheng et al.; AdaCon §III-B and Appendix B).

    ``max(0, ||z_a - z_p||^2 - ||z_a - z_n||^2 + m_an)`` for every anchor a, positive p and negative n, with a
    margin that grows with the label distance, ``m_an = margin_scale * |phi(y_a) - phi(y_n)|``. The default
    ``margin_scale = 4`` is ``2 d_an`` of Appendix B, the triplet that AdaCon reduces to with one positive and one
    negative (for unit vectors ``||z_a - z_p||^2 - ||z_a - z_n||^2 = 2 (cos_an - cos_ap)``). Averaged over the
    triplets with a positive loss (batch-all mining, as pytorch-metric-learning's ``AvgNonZeroReducer``; ours: the
    AdaCon paper gives no mining scheme for this baseline).
    Memory is O(N^3): meant for the paper's 64-view batches, not for thousands of views.

    ``reduction``: ``"mean"`` (default, the average above), ``"sum"`` over all triplets, or ``"none"`` for the
    per-anchor losses ``(N,)``: the sum of an anchor's triplet losses over its counted triplets (non-zero ones with
    ``average_nonzero``, else all valid ones), 0 when it has none.
    """

    def __init__(
        self,
        margin_scale: float = 4.0,
        tolerance: float = 0.0,
        average_nonzero: bool = True,
        gather_distributed: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        _check_reduction(type(self).__name__, reduction)
        self.margin_scale = float(margin_scale)
        self.tolerance = float(tolerance)
        self.average_nonzero = average_nonzero
        self.gather_distributed = gather_distributed

    def forward(self, embeddings, ecdf, ids=None, labels=None) -> torch.Tensor:
        _check_inputs(type(self).__name__, embeddings, ecdf, ids, labels)
        embeddings, ecdf, labels, ids = _prepare(embeddings, ecdf, ids, labels, self.gather_distributed)
        with _fp32():
            z = _upcast(embeddings)
            phi = ecdf.to(z.dtype)
            pos, eye = positive_mask(_targets(type(self).__name__, labels, phi, self.tolerance), ids, self.tolerance)
            neg = ~pos & ~eye
            sq = (2.0 - 2.0 * (z @ z.t())).clamp(min=0.0)  # squared distance of unit vectors
            m = self.margin_scale * (phi[:, None] - phi[None, :]).abs()
            # (a, p, n)
            t = sq[:, :, None] - sq[:, None, :] + m[:, None, :]
            valid = pos[:, :, None] & neg[:, None, :]
            t = torch.relu(t) * valid
            counted = (t > 0) if self.average_nonzero else valid
            if self.reduction == "none":
                return t.sum((1, 2)) / counted.sum((1, 2)).clamp(min=1)
            if self.reduction == "sum":
                return t.sum()
            count = counted.sum()
            if count == 0:
                return (z * 0.0).sum()
            return t.sum() / count
