"""Local Region Contrast (Naushad 2022, UC Irvine thesis §3.1.2; Yan et al., "Localized Region Contrast", 2023)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["LocalRegionContrastLoss", "region_means"]


def _flat_regions(regions: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if regions.shape[0] != batch:
        raise ValueError(f"LocalRegionContrastLoss: {name} has {regions.shape[0]} rows, the embeddings {batch}.")
    r = regions.reshape(batch, -1)
    if r.is_floating_point():  # nearest-warped region maps arrive as float; ids are exact integers below 2**24
        r = r.round()
    return r.long()


def region_means(
    embedding: torch.Tensor,
    ids: torch.Tensor,
    keep: torch.Tensor,
    num_points: int | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean pixel embedding of each kept region: of ``num_points`` pixels drawn uniformly with replacement from the
    region (§3.1.2), or of all its pixels when ``num_points`` is None.

    Args:
        embedding: ``(B, D, P)`` pixel embeddings (flattened spatial axis).
        ids: ``(B * P,)`` region index of every pixel in ``[0, G]``, 0 = ignored, ``g + 1`` for region ``g``.
        keep: ``(R,)`` the region indices ``g`` (sorted) whose means are returned.
        num_points: N, or None for the exact mean.
        generator: random generator of the draws.

    Returns: ``(R, D)``.
    """
    b, d, p = embedding.shape
    counts = torch.bincount(ids, minlength=int(keep.max().item()) + 2 if keep.numel() else 1)
    if num_points is None:
        flat = embedding.permute(0, 2, 1).reshape(b * p, d)
        sums = torch.zeros(counts.shape[0], d, dtype=flat.dtype, device=flat.device).index_add_(0, ids, flat)
        return sums[keep + 1] / counts[keep + 1].unsqueeze(1).to(flat.dtype)
    # pixels sorted by region: region g's pixels are order[start[g] : start[g] + counts[g]]
    order = torch.argsort(ids)
    start = torch.cumsum(counts, 0) - counts
    u = torch.rand(keep.shape[0], int(num_points), device=ids.device, generator=generator)
    n = counts[keep + 1].unsqueeze(1)
    pick = start[keep + 1].unsqueeze(1) + torch.minimum((u * n).long(), n - 1)  # uniform, with replacement
    pix = order[pick]  # (R, N) flat pixel indices b * P + p
    sampled = embedding[pix // p, :, pix % p]  # (R, N, D), gathered without a channels-last copy of the map
    return sampled.mean(1)


class LocalRegionContrastLoss(_Loss):
    """The local region contrast loss ``L_l`` of §3.1.2 over superpixel regions of a query view and its warp.

    For image ``x_q`` with regions ``r^1..r^K`` (Felzenszwalb superpixels) and ``x_p = T_e(x_q)`` with the warped
    regions ``r_p^k = T_e(r_q^k)``, the pixel embeddings ``f_q``, ``f_p`` (last decoder layer) are normalised over
    channels, ``N`` pixels are drawn uniformly with replacement from each region and averaged into ``f_q^k``,
    ``f_p^k``, and::

        L_l = - sum_k1 log( exp(f_q^k1 . f_p^k1 / tau) /
                            sum_k2 ( 1[k2 != k1] exp(f_q^k1 . f_q^k2 / tau) + exp(f_q^k1 . f_p^k2 / tau) ) )

    the positive is the same region in the other view; the negatives are the other regions of both views of the same
    image (regions of other images are not compared). The denominator's second sum includes ``k2 = k1`` (the
    positive), as in InfoNCE. Computed per image in a padded ``(B, K, K)`` block (no Python loop over images or
    regions), in float32 outside autocast.

    Regions that vanish under the warp (no pixel left in ``x_p``) or have fewer than ``min_region_size`` pixels in
    either view are dropped; images left with fewer than two regions have no negative and contribute nothing. Both
    are counted: ``last_counts`` holds ``regions`` (used), ``vanished``, ``small``, ``capped`` and ``images``
    (with a loss), and with ``return_counts=True`` the loss returns ``(loss, counts)`` so that
    :class:`~monai_contrastive.losses.MultiTermLoss` logs them as ``<term>_<count>``.

    Args:
        temperature: tau_l (0.07 in the thesis, §4.2).
        num_points: N pixels sampled per region (the thesis gives no value; 100 is ours); None averages every pixel
            of the region (exact means).
        min_region_size: regions smaller than this (pixels, in either view) are dropped.
        max_regions: at most this many regions per image, chosen at random (None: all).
        region_reduction: ``"sum"`` over the regions of an image (the thesis's equation) or ``"mean"``.
        ignore_index: region id of pixels that belong to no region (outside the body).
        return_counts: return ``(loss, counts)`` instead of the loss.
        reduction: over images, ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``, 0 for images without loss).

    Shapes: ``forward(embedding, regions, embedding_p=None, regions_p=None)``: ``embedding`` ``(B, D, *spatial)``,
    ``regions`` ``(B, 1, *spatial)`` or ``(B, *spatial)`` integer ids (float ids are rounded, as nearest-interpolated
    maps come). Without ``embedding_p`` the rows are the two views stacked view-major, ``(2B, ...)`` as
    :class:`~monai_contrastive.engines.PrepareViewBatch` lays them out: the first half is ``x_q``, the second ``x_p``.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        num_points: int | None = 100,
        min_region_size: int = 1,
        max_regions: int | None = None,
        region_reduction: str = "sum",
        ignore_index: int = 0,
        return_counts: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        if temperature <= 0:
            raise ValueError(f"LocalRegionContrastLoss: temperature must be > 0, got {temperature}.")
        if num_points is not None and num_points < 1:
            raise ValueError(f"LocalRegionContrastLoss: num_points must be >= 1 or None, got {num_points}.")
        if max_regions is not None and max_regions < 2:
            raise ValueError(f"LocalRegionContrastLoss: max_regions must be >= 2 or None, got {max_regions}.")
        if region_reduction not in ("sum", "mean"):
            raise ValueError(f"LocalRegionContrastLoss: region_reduction 'sum' or 'mean', got {region_reduction!r}.")
        self.temperature = float(temperature)
        self.num_points = None if num_points is None else int(num_points)
        self.min_region_size = max(1, int(min_region_size))
        self.max_regions = max_regions
        self.region_reduction = region_reduction
        self.ignore_index = int(ignore_index)
        self.return_counts = return_counts
        self.generator: torch.Generator | None = None
        self.last_counts: dict[str, int] = {}

    def forward(
        self,
        embedding: torch.Tensor,
        regions: torch.Tensor,
        embedding_p: torch.Tensor | None = None,
        regions_p: torch.Tensor | None = None,
    ):
        if (embedding_p is None) != (regions_p is None):
            raise ValueError("LocalRegionContrastLoss: give both embedding_p and regions_p, or neither.")
        if embedding_p is None:
            if embedding.shape[0] % 2:
                raise ValueError(
                    f"LocalRegionContrastLoss: stacked views need an even number of rows (view-major q then p), got "
                    f"{embedding.shape[0]}."
                )
            embedding, embedding_p = embedding.chunk(2)
            regions, regions_p = regions.chunk(2)
        if embedding.ndim < 3 or embedding_p.shape != embedding.shape:
            raise ValueError(
                f"LocalRegionContrastLoss: embeddings (B, D, *spatial) of equal shape expected, got "
                f"{tuple(embedding.shape)} and {tuple(embedding_p.shape)}."
            )
        b, d = embedding.shape[:2]
        p = embedding[0, 0].numel()
        rq, rp = _flat_regions(regions, b, "regions"), _flat_regions(regions_p, b, "regions_p")
        if rq.shape[1] != p or rp.shape[1] != p:
            raise ValueError(
                f"LocalRegionContrastLoss: region maps {tuple(regions.shape)} do not match the embeddings "
                f"{tuple(embedding.shape)} (one id per pixel)."
            )
        device = embedding.device
        with torch.autocast(device_type=device.type, enabled=False):
            fq = F.normalize(embedding.float(), dim=1).reshape(b, d, p)
            fp = F.normalize(embedding_p.float(), dim=1).reshape(b, d, p)
            # one index per (image, region id): g = image * M + id; 0 is "ignored", g + 1 otherwise
            m = int(torch.maximum(rq.max(), rp.max()).item()) + 1
            if int(torch.minimum(rq.min(), rp.min()).item()) < 0:
                raise ValueError("LocalRegionContrastLoss: region ids must be >= 0.")
            offset = torch.arange(b, device=device).unsqueeze(1) * m
            gq = torch.where(rq != self.ignore_index, rq + offset + 1, 0).reshape(-1)
            gp = torch.where(rp != self.ignore_index, rp + offset + 1, 0).reshape(-1)
            cq = torch.bincount(gq, minlength=b * m + 1)[1:]
            cp = torch.bincount(gp, minlength=b * m + 1)[1:]
            present = cq > 0
            vanished = present & (cp == 0)
            keep = present & (cq >= self.min_region_size) & (cp >= self.min_region_size)
            small = present & ~vanished & ~keep
            kept = torch.nonzero(keep).squeeze(1)  # sorted, so sorted by image
            image = torch.div(kept, m, rounding_mode="floor")
            capped = 0
            if self.max_regions is not None and kept.numel():
                # a random subset of at most max_regions per image: rank regions within their image by a random key
                key = image.to(torch.float64) + torch.rand(kept.shape[0], device=device, generator=self.generator)
                perm = torch.argsort(key)
                kept, image = kept[perm], image[perm]
                rank = torch.arange(kept.shape[0], device=device) - _first_index(image, b)[image]
                sel = rank < self.max_regions
                capped = int((~sel).sum().item())
                kept, image = kept[sel], image[sel]
                order = torch.argsort(kept)
                kept, image = kept[order], image[order]
            per_image = torch.bincount(image, minlength=b)
            sel = per_image[image] >= 2  # a single region has no negative
            kept, image = kept[sel], image[sel]
            per_image = torch.bincount(image, minlength=b)
            counts = {
                "regions": int(kept.numel()),
                "vanished": int(vanished.sum().item()),
                "small": int(small.sum().item()),
                "capped": capped,
                "images": int((per_image > 0).sum().item()),
            }
            self.last_counts = counts
            if kept.numel() == 0:
                warnings.warn(
                    "LocalRegionContrastLoss: no image has two regions left in both views; the loss is 0 for this "
                    f"batch ({counts}).",
                    stacklevel=2,
                )
                loss_img = (embedding.sum() + embedding_p.sum()).float() * 0.0 + torch.zeros(b, device=device)
            else:
                mq = region_means(fq, gq, kept, self.num_points, self.generator)
                mp = region_means(fp, gp, kept, self.num_points, self.generator)
                loss_img = self._contrast(mq, mp, image, b)
        if self.reduction == "none":
            out = loss_img
        elif self.reduction == "sum":
            out = loss_img.sum()
        else:
            out = loss_img.sum() / max(counts["images"], 1)
        if self.return_counts:
            return out, {k: torch.tensor(float(v), device=device) for k, v in counts.items()}
        return out

    def _contrast(self, mq: torch.Tensor, mp: torch.Tensor, image: torch.Tensor, batch: int) -> torch.Tensor:
        """Per-image loss from the region means ``(R, D)`` of both views, regions grouped by ``image`` ``(R,)``."""
        per_image = torch.bincount(image, minlength=batch)
        kmax = int(per_image.max().item())
        slot = torch.arange(image.shape[0], device=image.device) - _first_index(image, batch)[image]
        d = mq.shape[1]
        q = mq.new_zeros(batch, kmax, d)
        pk = mp.new_zeros(batch, kmax, d)
        q[image, slot] = mq
        pk[image, slot] = mp
        valid = torch.zeros(batch, kmax, dtype=torch.bool, device=mq.device)
        valid[image, slot] = True
        s_qp = torch.bmm(q, pk.transpose(1, 2)) / self.temperature  # (B, K, K): q^k1 . p^k2
        s_qq = torch.bmm(q, q.transpose(1, 2)) / self.temperature  # q^k1 . q^k2
        pair = valid.unsqueeze(2) & valid.unsqueeze(1)
        eye = torch.eye(kmax, dtype=torch.bool, device=mq.device).unsqueeze(0)
        neg_inf = torch.finfo(s_qp.dtype).min
        denom = torch.logsumexp(
            torch.cat([s_qq.masked_fill(~pair | eye, neg_inf), s_qp.masked_fill(~pair, neg_inf)], dim=2), dim=2
        )
        per_region = (denom - torch.diagonal(s_qp, dim1=1, dim2=2)) * valid  # (B, K)
        loss = per_region.sum(1)
        if self.region_reduction == "mean":
            loss = loss / per_image.clamp(min=1)
        return loss


def _first_index(image: torch.Tensor, batch: int) -> torch.Tensor:
    """For rows grouped (sorted) by ``image``, the first row of each image ``(batch,)``."""
    counts = torch.bincount(image, minlength=batch)
    return torch.cumsum(counts, 0) - counts
