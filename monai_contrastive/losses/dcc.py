"""Dynamic contrast correlation (DCC) contrastive loss (Lee et al., "Adaptive Contrastive Learning with Dynamic
Correlation for Multi-Phase Organ Segmentation", §3.2, eq. 1-4) and the pretraining objectives it is compared with
(Table 3: SimCLR / NT-Xent, cross-entropy on organ + phase, supervised contrast on organ + phase (AGCL), DCC)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.modules.loss import _Loss

from monai_contrastive.distributed import gather_for_loss
from monai_contrastive.losses.multiterm import MultiTermLoss

__all__ = [
    "PRETRAIN_METHODS",
    "DynamicContrastCorrelationLoss",
    "attention_mean_intensity",
    "contrast_correlation_weights",
    "dcc_pretraining_loss",
]

PRETRAIN_METHODS = ("none", "simclr", "ce", "agcl", "dcc")
"""Pretraining options of Table 3 / 4: no pretraining, SimCLR (NT-Xent), cross-entropy on organ + phase, supervised
contrast on organ + phase (AGCL, Hin Lee et al. 2021), DCC-CL."""

_WEIGHTINGS = ("eq4", "denominator", "none")


def attention_mean_intensity(
    image: torch.Tensor, attention: torch.Tensor, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """``d_i``, the mean intensity of each view inside its own attention region (eq. 1), and whether it exists.

    ``d_i = sum_{phi} (x_i * s_i) / |phi|`` with ``phi`` the pixels where the attention map ``s_i`` is on
    (``> threshold``; a binary map after nearest-neighbour augmentation) and ``x_i`` the normalised image channel(s)
    of the same view. A view whose attention region is empty (the organ was cropped out by the augmentation, or the
    coarse mask missed it) has no ``d_i``: it gets ``d_i = 0`` and ``valid_i = False``, and
    :func:`contrast_correlation_weights` gives its pairs weight 1 (no contrast evidence, the plain NT-Xent pair).

    Args:
        image: ``(N, C, H, W)`` or ``(N, H, W)`` intensities normalised to [0, 1].
        attention: ``(N, 1, H, W)`` or ``(N, H, W)`` attention maps of the same views.
        threshold: an attention value above it is inside the region.

    Returns:
        ``d`` ``(N,)`` and ``valid`` ``(N,)`` (bool).
    """
    if image.ndim == 3:
        image = image[:, None]
    if attention.ndim == 3:
        attention = attention[:, None]
    if image.shape[0] != attention.shape[0] or image.shape[2:] != attention.shape[2:] or attention.shape[1] != 1:
        raise ValueError(
            f"attention_mean_intensity: image (N, C, H, W) and attention (N, 1, H, W) of the same views expected, got "
            f"{tuple(image.shape)} and {tuple(attention.shape)}."
        )
    if not image.is_floating_point():
        image = image.float()
    # the region as 0/1 of the image's dtype (a bool reduction would go through int64 and be several times slower);
    # one image channel: multiplied into that buffer in place, else one batched product per view
    region = torch.empty(attention.shape, dtype=image.dtype, device=image.device)
    torch.gt(attention, threshold, out=region)  # compared straight into 0/1 floats: one pass, no bool temporary
    region = region.flatten(1)  # (N, HW)
    count = region.sum(1) * image.shape[1]  # |phi| counts pixels x channels (eq. 1 sums over c)
    if image.shape[1] == 1:
        total = region.mul_(image.flatten(1)).sum(1)
    else:
        total = torch.bmm(image.flatten(2), region.unsqueeze(2)).sum((1, 2))  # (N, C, HW) @ (N, HW, 1)
    valid = count > 0
    return torch.where(valid, total / count.clamp(min=1), torch.zeros_like(total)), valid


def contrast_correlation_weights(d: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The contrast correlation weights ``1 - v_ij = 1 - |d_i - d_j|`` (eq. 2, 4), ``(N,)`` -> ``(N, N)``.

    One vectorised outer difference (no loop over pairs). Clamped to [0, 1] (``d`` in [0, 1] keeps it there
    already; a ``d`` outside from an unnormalised input would otherwise make weights negative). A pair with an
    invalid ``d`` (empty attention region) has weight 1.
    """
    d = d.reshape(-1)
    w = (d[:, None] - d[None, :]).abs_().neg_().add_(1.0).clamp_(0.0, 1.0)  # one (N, N) allocation
    if valid is not None:
        invalid = ~valid.reshape(-1).to(torch.bool)
        if bool(invalid.any()):
            w[invalid] = 1.0
            w[:, invalid] = 1.0
    return w


class DynamicContrastCorrelationLoss(_Loss):
    """DCC contrastive loss (eq. 4), NT-Xent weighted by the organ-wise contrast correlation of the views.

    .. math::
        L_{dcc} = -\\sum_{k=1}^{2n} \\log \\frac{\\exp(z_k \\cdot z_{p(k)} (1 - v_{k,p(k)}) / T)}
        {\\sum_{j \\ne k} \\exp(z_k \\cdot z_j (1 - v_{k,j}) / T)}

    ``z`` are the unit-length projections of the 2n views (two views of each organ patch), ``p(k)`` the other view
    of the same patch (same ``sample_id``), ``v`` from :func:`attention_mean_intensity` /
    :func:`contrast_correlation_weights` on the views' own image and attention channels (the network input is the
    2-channel ``[image, attention]`` patch, §3.1). The weights are not differentiated (they depend on the input
    only). Computed as a cross-entropy over the masked logit matrix, float32 outside autocast.

    ``weighting``:

    - ``"eq4"`` (default, the paper): the weight multiplies the similarity inside the exponent, numerator and
      denominator.
    - ``"denominator"``: what the authors' published code does: logits ``z_k.z_j / T``, each denominator term
      ``exp`` multiplied by ``w_kj`` (the positive's included), the numerator unweighted, and the loss scaled by
      ``T / base_temperature`` (0.07). Weights of 0 are floored at 1e-12 so the logarithm stays finite.
    - ``"none"``: every weight 1, i.e. SimCLR's NT-Xent (Chen et al. 2020) — the SimCLR ablation of Table 3 / 4.

    An anchor with no positive in the batch (a view whose partner is missing) contributes nothing; the loss is
    averaged over anchors with a positive (``reduction="mean"``; eq. 4 sums, a scale factor only), summed, or
    returned per anchor (``"none"``, 0 without a positive). Under ``torch.distributed`` the embeddings (with
    gradient), intensities and sample ids of all ranks are gathered, so N GPUs compute the loss of the N-times batch.

    Args:
        temperature: ``T`` (0.07, paper §5.3 / Fig. 5a; the authors' code runs 0.3).
        weighting: ``"eq4"``, ``"denominator"`` or ``"none"``.
        base_temperature: the rescaling ``T / base_temperature`` of the ``"denominator"`` mode (authors' code).
        image_channels: channels of the network input holding the image (eq. 1's ``x``).
        attention_channel: channel of the network input holding the organ attention map (eq. 1's ``s``).
        attention_threshold: attention values above it are inside the region.
        gather_distributed: gather across ranks under ``torch.distributed``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shapes: ``embedding`` ``(2n, D)`` (unit rows), ``image`` ``(2n, C, H, W)`` (the network input), ``sample_id``
    ``(2n,)`` (None: rows ``k`` and ``k + n`` are the two views, the view-major layout of
    :class:`~monai_contrastive.engines.PrepareViewBatch`); output a scalar, or ``(2n,)``.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        weighting: str = "eq4",
        base_temperature: float = 0.07,
        image_channels: Sequence[int] | int = (0,),
        attention_channel: int = 1,
        attention_threshold: float = 0.5,
        gather_distributed: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError(f"DynamicContrastCorrelationLoss: temperatures must be > 0, got {temperature}.")
        if weighting not in _WEIGHTINGS:
            raise ValueError(
                f"DynamicContrastCorrelationLoss: weighting must be one of {_WEIGHTINGS}, got {weighting!r}."
            )
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"DynamicContrastCorrelationLoss: reduction must be mean, sum or none, got {reduction!r}.")
        self.temperature = float(temperature)
        self.weighting = weighting
        self.base_temperature = float(base_temperature)
        self.image_channels = [int(image_channels)] if isinstance(image_channels, int) else list(image_channels)
        self.attention_channel = int(attention_channel)
        self.attention_threshold = float(attention_threshold)
        self.gather_distributed = gather_distributed

    def intensities(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d, valid)`` of eq. 1 from the network input ``(N, C, H, W)`` (image and attention channels)."""
        if image.ndim != 4 or image.shape[1] <= max(self.image_channels + [self.attention_channel]):
            raise ValueError(
                f"DynamicContrastCorrelationLoss: the input (N, C, H, W) must hold image channel(s) "
                f"{self.image_channels} and attention channel {self.attention_channel}, got {tuple(image.shape)}."
            )
        dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        if len(self.image_channels) == 1:  # a view, not a copy
            img = image[:, self.image_channels[0] : self.image_channels[0] + 1].to(dtype)
        else:
            img = image[:, self.image_channels].to(dtype)
        att = image[:, self.attention_channel : self.attention_channel + 1]
        return attention_mean_intensity(img, att, self.attention_threshold)

    def forward(
        self, embedding: torch.Tensor, image: torch.Tensor | None = None, sample_id: torch.Tensor | None = None
    ) -> torch.Tensor:
        if embedding.ndim != 2:
            raise ValueError(
                f"DynamicContrastCorrelationLoss: embedding must be (2n, D), got {tuple(embedding.shape)}."
            )
        n_rows = embedding.shape[0]
        if sample_id is None:
            if n_rows % 2:
                raise ValueError(f"DynamicContrastCorrelationLoss: 2n rows expected without sample_id, got {n_rows}.")
            sample_id = torch.arange(n_rows, device=embedding.device) % (n_rows // 2)
        sample_id = sample_id.reshape(-1).to(embedding.device)
        if sample_id.shape[0] != n_rows:
            raise ValueError(f"DynamicContrastCorrelationLoss: {sample_id.shape[0]} sample ids for {n_rows} rows.")
        if self.weighting == "none":
            d = torch.zeros(n_rows, device=embedding.device)
            valid = torch.zeros(n_rows, dtype=torch.bool, device=embedding.device)
        else:
            if image is None or image.shape[0] != n_rows:
                got = None if image is None else tuple(image.shape)
                raise ValueError(f"DynamicContrastCorrelationLoss: the {n_rows} views' input is needed, got {got}.")
            d, valid = self.intensities(image.to(embedding.device))
        return self.from_intensities(embedding, d, valid, sample_id)

    def from_intensities(
        self, embedding: torch.Tensor, d: torch.Tensor, valid: torch.Tensor, sample_id: torch.Tensor
    ) -> torch.Tensor:
        """eq. 2 and 4 from the views' eq. 1 intensities ``d`` ``(2n,)`` and their ``valid`` flags (``forward``
        computes them from the input; this entry skips that, e.g. when they come precomputed)."""
        sample_id = sample_id.reshape(-1).to(embedding.device)
        d = d.reshape(-1).to(embedding.device)
        valid = valid.reshape(-1).to(embedding.device)
        if self.gather_distributed:
            embedding, d, valid, sample_id = gather_for_loss(embedding, d, valid.float(), local_ids=sample_id)
            valid = valid > 0.5
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            dtype = torch.float64 if embedding.dtype == torch.float64 else torch.float32
            return self._loss(embedding.to(dtype), d.to(dtype), valid, sample_id)

    def _loss(self, z: torch.Tensor, d: torch.Tensor, valid: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # (2n, 2n) work in place where autograd allows (at 2n = 4096 each temporary is 64 MB): one matrix product, one
        # weight matrix with 1 / T folded in, one in-place product, the diagonal filled in place, one log-sum-exp; the
        # positives' logits are gathered (O(#pairs)) instead of a masked pass over the whole matrix
        n = z.shape[0]
        logits = z @ z.t()
        w = None
        if self.weighting != "none":
            w = contrast_correlation_weights(d.detach(), valid)
        if self.weighting == "eq4":
            logits = logits.mul_(w.mul(1.0 / self.temperature))  # mm's backward needs z only, not its output
        else:
            logits = logits.mul_(1.0 / self.temperature)
        logits.diagonal().fill_(float("-inf"))
        if self.weighting == "denominator":
            log_den = torch.logsumexp(logits + w.clamp_(min=1e-12).log_(), dim=1)
        else:
            log_den = torch.logsumexp(logits, dim=1)
        rows, cols = _positive_pairs(ids)
        n_pos = torch.bincount(rows, minlength=n)
        has_pos = n_pos > 0
        pos_sum = torch.zeros(n, dtype=logits.dtype, device=z.device).index_add_(0, rows, logits[rows, cols])
        per_anchor = log_den - pos_sum / n_pos.clamp(min=1)
        if self.weighting == "denominator":
            per_anchor = per_anchor * (self.temperature / self.base_temperature)
        per_anchor = torch.where(has_pos, per_anchor, torch.zeros_like(per_anchor))
        if self.reduction == "none":
            return per_anchor
        if self.reduction == "sum":
            return per_anchor.sum()
        return per_anchor.sum() / has_pos.sum().clamp(min=1)


def _positive_pairs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of every ordered pair ``k != j`` with ``ids[k] == ids[j]``. Two views per sample (the usual
    batch) in O(n log n) from a sort; otherwise from the (n, n) comparison."""
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    if bool((counts == 2).all()):
        pairs = torch.argsort(inverse, stable=True).view(-1, 2)  # the two rows of each sample
        return torch.cat([pairs[:, 0], pairs[:, 1]]), torch.cat([pairs[:, 1], pairs[:, 0]])
    pos = ids[:, None] == ids[None, :]
    pos.fill_diagonal_(False)
    return pos.nonzero(as_tuple=True)


def dcc_pretraining_loss(
    method: str,
    temperature: float = 0.07,
    weighting: str = "eq4",
    base_temperature: float = 0.07,
    gather_distributed: bool = True,
) -> MultiTermLoss:
    """The pretraining objective of one row of Table 3 / 4 as a :class:`MultiTermLoss` over named outputs.

    - ``"simclr"``: NT-Xent over ``embedding`` (``DynamicContrastCorrelationLoss(weighting="none")``).
    - ``"dcc"``: eq. 4 over ``embedding`` with the views' ``image`` (``weighting`` selects eq. 4 or the published
      code's denominator-only weighting).
    - ``"agcl"``: supervised contrast (Khosla et al. 2020) with one class per (organ, phase) pair, ``organ_phase``
      (the multi-label contrast of Hin Lee et al. 2021 on organ and phase labels).
    - ``"ce"``: cross-entropy of the ``organ_logits`` and ``phase_logits`` heads against ``organ`` and ``phase``.

    ``"none"`` has no pretraining and no loss: a ``ValueError`` says so.
    """
    from monai_contrastive.losses.adacon import SupConLoss

    if method not in PRETRAIN_METHODS:
        raise ValueError(f"pretrain_method must be one of {PRETRAIN_METHODS}, got {method!r}.")
    if method == "none":
        raise ValueError("pretrain_method 'none' trains no encoder: skip pretraining (fine-tune with init 'none').")
    if method in ("simclr", "dcc"):
        loss = DynamicContrastCorrelationLoss(
            temperature,
            weighting="none" if method == "simclr" else weighting,
            base_temperature=base_temperature,
            gather_distributed=gather_distributed,
        )
        inputs = ["embedding", "sample_id"] if method == "simclr" else ["embedding", "image", "sample_id"]
        if method == "simclr":
            return MultiTermLoss({"simclr": {"loss": _NoImage(loss), "inputs": inputs}})
        return MultiTermLoss({"dcc": {"loss": loss, "inputs": inputs}})
    if method == "agcl":
        supcon = SupConLoss(temperature=temperature, gather_distributed=gather_distributed)
        inputs = ["embedding", "organ_phase", "sample_id", "organ_phase"]
        return MultiTermLoss({"agcl": {"loss": supcon, "inputs": inputs}})
    return MultiTermLoss(
        {
            "organ_ce": {"loss": torch.nn.CrossEntropyLoss(), "inputs": ["organ_logits", "organ"]},
            "phase_ce": {"loss": torch.nn.CrossEntropyLoss(), "inputs": ["phase_logits", "phase"]},
        }
    )


class _NoImage(torch.nn.Module):
    """NT-Xent needs no image: ``loss(embedding, sample_id)``."""

    def __init__(self, loss: DynamicContrastCorrelationLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, embedding: torch.Tensor, sample_id: torch.Tensor) -> torch.Tensor:
        return self.loss(embedding, None, sample_id)
