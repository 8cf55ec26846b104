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
from torch.autograd.function import once_differentiable
from torch.nn.modules.loss import _Loss

from monai_contrastive.distributed import gather_for_loss

__all__ = ["AdaptiveMarginContrastiveLoss", "SupConLoss", "NPairLoss", "AdaptiveTripletLoss", "positive_mask"]


def positive_mask(
    targets: torch.Tensor, ids: torch.Tensor | None = None, tolerance: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive-pair and self masks ``(N, N)`` (bool).

    ``pos[i, j]`` is True for ``j != i`` when i and j share an id or ``|t_i - t_j| <= tolerance``.
    """
    eye = torch.eye(targets.shape[0], dtype=torch.bool, device=targets.device)
    return _positive_mask(targets, ids, tolerance), eye


def _positive_mask(targets: torch.Tensor, ids: torch.Tensor | None, tolerance: float) -> torch.Tensor:
    """The positive mask of :func:`positive_mask`, built in place (one bool ``(N, N)`` buffer)."""
    return _positive_weights(targets, ids, tolerance, torch.bool)


def _ids_add_positives(targets: torch.Tensor, ids: torch.Tensor, tolerance: float) -> bool:
    """Whether two rows with one id can have targets that are not positives anyway (O(N log N), no N x N mask).

    Views of one sample carry one label, so usually the id mask adds nothing and need not be built.
    """
    _, inverse = torch.unique(ids, return_inverse=True)
    lo = torch.full_like(targets, float("inf")).scatter_reduce_(0, inverse, targets, "amin")
    hi = torch.full_like(targets, float("-inf")).scatter_reduce_(0, inverse, targets, "amax")
    spread = hi[inverse] - lo[inverse]
    return bool((spread > abs(tolerance)).any() or not torch.isfinite(spread).all())


def _positive_weights(
    targets: torch.Tensor, ids: torch.Tensor | None, tolerance: float, dtype: torch.dtype
) -> torch.Tensor:
    """The positive mask ``(N, N)`` in ``dtype`` (1/0 for a float dtype), zero diagonal.

    On the CPU, comparisons written straight into a float buffer are several times faster than into a bool one
    followed by a cast (measured here); the losses need the float mask.
    """
    n = targets.shape[0]
    if targets.device.type == "cpu":
        pos = torch.empty((n, n), dtype=dtype, device=targets.device)
        if tolerance != 0:
            torch.le((targets[:, None] - targets[None, :]).abs_(), tolerance, out=pos)
        else:
            torch.eq(targets[:, None], targets[None, :], out=pos)
    elif tolerance != 0:
        pos = ((targets[:, None] - targets[None, :]).abs_() <= tolerance).to(dtype)
    else:
        pos = (targets[:, None] == targets[None, :]).to(dtype)
    if ids is not None and _ids_add_positives(targets, ids, tolerance):
        same_id = (ids[:, None] == ids[None, :]).to(dtype)
        if dtype == torch.bool:
            pos |= same_id
        else:
            torch.maximum(pos, same_id, out=pos)
    pos.diagonal().fill_(0)
    return pos


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


_EXP_FLOOR = -60.0


class _MarginSupConFunction(torch.autograd.Function):
    """Per-anchor SupCon / AdaCon losses (eq. 1 / eq. 6) with a hand-written backward.

    Autograd through the plain expression keeps about ten ``(N, N)`` temporaries alive (cosines, logits, margins,
    masked logits, log-probabilities, their masked copy) and replays each one in the backward pass. Here the
    forward pass turns the one cosine matrix into ``exp(logit - row max)`` in place (a fused log-sum-exp) and the
    backward pass needs one more ``(N, N)`` buffer:

    ``dL_i / dcos_ij = s (softmax_ij - pos_ij / |P(i)|)`` for an anchor with a positive (0 otherwise), the softmax
    taken over ``a != i`` of the logits ``s (cos_ia + d_ia)``; ``cos = z z^T`` gives ``dz = (G + G^T) z``.

    Inputs: ``z`` ``(N, D)``; ``offset`` ``(N, N)`` added to ``s * cos`` (the margins ``s d``) or None; ``pos``
    ``(N, N)`` 0/1 in z's dtype, zero diagonal; ``n_pos`` ``(N,)`` its row sums; ``scale`` ``s``.
    Output: ``(N,)``, 0 for anchors without a positive. Eq. 6's per-anchor term is ``log_denom_i - s mean_p cos_ip``.
    """

    @staticmethod
    def forward(ctx, z, offset, pos, n_pos, scale):
        logits = z @ z.t()
        # sum of the positives' cosines per anchor, before the cosines are overwritten
        pos_cos = (pos * logits).sum(1)
        logits.mul_(scale)
        if offset is not None:
            logits.add_(offset)
        logits.diagonal().fill_(float("-inf"))
        row_max = logits.amax(1)
        # a row with no other sample (N = 1) is all -inf; it has no positive either
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        # exp() below about -87 (float32) takes a slow path (subnormal results), 100x slower here, and subnormal
        # entries of the backward's gradient matrix slow its matmuls as much; terms below e^-60 of the row's largest
        # are raised to e^-60: that changes the row sum (>= 1) by at most N e^-60 (1e-22 at N = 10^4), below
        # float32 and float64 rounding
        exp = logits.sub_(row_max[:, None]).clamp_(min=_EXP_FLOOR).exp_()
        exp.diagonal().fill_(0.0)
        row_sum = exp.sum(1)
        valid = n_pos > 0
        log_denom = row_max + row_sum.log()
        per_anchor = torch.where(valid, log_denom - scale * pos_cos / n_pos.clamp(min=1), torch.zeros_like(row_max))
        ctx.scale = scale
        ctx.save_for_backward(z, exp, pos, row_sum, n_pos)
        return per_anchor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        z, exp, pos, row_sum, n_pos = ctx.saved_tensors
        s = ctx.scale
        with _fp32():  # a backward called inside an autocast region must not run these matmuls in half precision
            w = torch.where(n_pos > 0, grad.to(z.dtype) * s, torch.zeros_like(row_sum))
            g = exp * (w / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum)))[:, None]
            g.addcmul_(pos, (w / n_pos.clamp(min=1))[:, None], value=-1.0)
            dz = g @ z
            dz.addmm_(g.t(), z)
        return dz, None, None, None, None


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
    fp16/bf16 mixed precision. Forward and backward are fused by hand (:class:`_MarginSupConFunction`): two
    ``(N, N)`` buffers besides the masks, no autograd graph over ``(N, N)`` temporaries. With ``margin=False`` (or
    ``margin_scale=0``) this is exactly SupCon with temperature ``1 / s`` (eq. 1).

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
            pos = _positive_weights(_targets(name, labels, phi, self.tolerance), ids, self.tolerance, z.dtype)
            offset = None
            if self.margin and self.margin_scale != 0:
                # eq. 4, times s; d = 0 for positives (Appendix A, eq. 14): offset * (1 - pos), in place
                offset = (phi[:, None] - phi[None, :]).abs_().mul_(self.scale * self.margin_scale)
                offset.addcmul_(offset, pos, value=-1.0)
            n_pos = pos.sum(1)
            per_anchor = _MarginSupConFunction.apply(z, offset, pos, n_pos, self.scale)
            if self.reduction == "none":
                return per_anchor
            n_valid = (n_pos > 0).sum()
            if n_valid == 0:
                return (z * 0.0).sum()
            return per_anchor.sum() / n_valid


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
