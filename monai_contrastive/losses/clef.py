"""The three pretraining losses of CLEF (Kuleshov, Goncharov, Soboleva, "CLEF: Contrastive Learning of Equivariant
Features in CT Images", FLARE 2022, §2.2): decoding, discriminativeness (eq. 1) and equivariance (eq. 2).

Feature normalisation: the discriminativeness and equivariance losses L2-normalise every voxel's feature vector
(over channels) before taking inner products, so both are cosines in ``[-1, 1]``. The paper reasons about feature
vectors on a sphere (§2.2: "if our feature space is a 3D sphere and M = 0, then there are at most 8 vectors ...") and
sets the margin M = -0.9 on that scale; without the normalisation eq. 1 is minimised by shrinking every feature to
zero (``relu(M + <f_a, f_l>)`` is 0 for any features with ``<f_a, f_l> <= 0.9``) and eq. 2 is unbounded below (scale
the features up). The equivariance loss normalises after warping, so an interpolated feature counts as a direction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch.nn.modules.loss import _Loss

__all__ = [
    "DecodingLoss",
    "DiscriminativenessLoss",
    "EquivarianceLoss",
    "OrganDiceCELoss",
    "organ_one_hot",
    "sample_body_voxels",
    "voxel_coordinates_mm",
]


class DecodingLoss(_Loss):
    """The decoding loss of §2.2: ``L_dec = MSE(f_dec(f_enc(X)), X) = 1/N sum_ijk (f_dec(f_enc(X))[i,j,k] -
    X[i,j,k])^2``, averaged over every voxel (and channel and sample) of the preprocessed image.

    Shapes: ``decoded`` and ``image`` ``(B, C, *spatial)``, the same shape (an error names both otherwise).
    """

    def forward(self, decoded: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if decoded.shape != image.shape:
            raise ValueError(
                f"DecodingLoss: the decoding head's output {tuple(decoded.shape)} and the image {tuple(image.shape)} "
                "must have the same shape."
            )
        return F.mse_loss(decoded, image.to(decoded.dtype), reduction=self.reduction)


def voxel_coordinates_mm(index: torch.Tensor, spatial: tuple[int, ...], spacing: torch.Tensor) -> torch.Tensor:
    """Physical coordinates (mm, relative to voxel 0) of flat voxel indices.

    Args:
        index: ``(B, K)`` flat indices into ``spatial`` (C order).
        spatial: the spatial shape ``(S0, S1, S2)``.
        spacing: ``(B, 3)`` voxel size in mm along each array axis (anisotropic allowed).

    Returns:
        ``(B, K, 3)`` float coordinates in mm.
    """
    coords = []
    rest = index
    for size in reversed(spatial):
        coords.append(rest % size)
        rest = torch.div(rest, size, rounding_mode="floor")
    grid = torch.stack(coords[::-1], dim=-1).to(spacing.dtype)
    return grid * spacing[:, None, :]


def sample_body_voxels(
    mask: torch.Tensor, num: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num`` voxels uniformly (with replacement) from the body mask of each sample.

    Args:
        mask: ``(B, N)`` boolean (or 0/1) body mask over the flattened volume.
        num: voxels per sample.
        generator: random generator of the draw (on the mask's device).

    Returns:
        ``(index, has_body)``: ``(B, num)`` flat indices (0 for a sample without body voxels) and ``(B,)`` whether
        the sample had any body voxel.
    """
    weights = mask.reshape(mask.shape[0], -1).float()
    has_body = weights.sum(1) > 0
    # a sample without body voxels draws from the whole volume; the caller drops its pairs
    weights = torch.where(has_body[:, None], weights, torch.ones_like(weights))
    index = torch.multinomial(weights, int(num), replacement=True, generator=generator)
    return index, has_body


class DiscriminativenessLoss(_Loss):
    """The discriminativeness loss of CLEF, eq. 1: features of voxels at least ``min_distance_mm`` apart must differ.

    For each sample: anchors ``I_A`` (``num_anchors`` voxels) and leaves ``I_L`` (``num_leaves`` voxels) are drawn
    uniformly inside the body mask; ``D[a, l] = -<f_a, f_l>`` with L2-normalised features (see the module docstring);
    ``F(a) = {l in I_L : ||l - a||_mm >= min_distance_mm}`` with the physical distance computed from the sample's
    voxel spacing (anisotropic); ``L_d = sum_a sum_{l in F(a)} relu(M - D[a, l])``.

    Reduction: ``"sum"`` is eq. 1 as written, per sample; ``"mean"`` (default) divides it by the number of far pairs
    ``sum_a |F(a)|`` (ours: the term's scale then does not depend on the sampling sizes, which the paper does not
    give, so a loss weight keeps its meaning when they change). Either way the batch value is the mean over samples
    that have at least one far pair; a sample with no body voxel or no far pair contributes nothing, and a batch
    without any far pair gives 0 (still connected to the graph), never NaN.

    Memory: ``O(B * num_anchors * num_leaves)`` for the similarity and distance matrices (never ``O(voxels^2)``);
    features are gathered at the sampled voxels before any product.

    Args:
        num_anchors: |I_A| per sample ("a small subset", no size given in the paper; ours: 64).
        num_leaves: |I_L| per sample ("a large subset"; ours: 2048).
        min_distance_mm: the far-pair threshold (paper §2.2: 10 mm).
        margin: M (paper §2.2: -0.9).
        reduction: ``"mean"`` or ``"sum"`` (see above).
        generator: optional random generator of the voxel draws (seeded tests).
    """

    def __init__(
        self,
        num_anchors: int = 64,
        num_leaves: int = 2048,
        min_distance_mm: float = 10.0,
        margin: float = -0.9,
        reduction: str = "mean",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"DiscriminativenessLoss: reduction must be 'mean' or 'sum', got {reduction!r}.")
        if int(num_anchors) < 1 or int(num_leaves) < 1:
            raise ValueError(f"num_anchors and num_leaves must be >= 1, got {num_anchors}, {num_leaves}.")
        self.num_anchors = int(num_anchors)
        self.num_leaves = int(num_leaves)
        self.min_distance_mm = float(min_distance_mm)
        self.margin = float(margin)
        self.generator = generator

    def forward(
        self, features: torch.Tensor, body: torch.Tensor, spacing: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            features: ``(B, C, *spatial)`` voxel features (not normalised; normalised here).
            body: ``(B, 1, *spatial)`` body mask (HU > -500 before windowing), voxels eligible as anchors / leaves.
            spacing: ``(B, 3)`` voxel size in mm along the array axes of ``features``.

        Returns:
            ``(loss, {"far_pairs": mean far pairs per sample, "active": fraction of far pairs with a non-zero
            hinge})``.
        """
        b, _, *spatial = features.shape
        if body.shape[0] != b or tuple(body.shape[2:]) != tuple(spatial):
            raise ValueError(
                f"DiscriminativenessLoss: body mask {tuple(body.shape)} does not match the features "
                f"{tuple(features.shape)}."
            )
        spacing = torch.as_tensor(spacing, device=features.device, dtype=torch.float32).reshape(b, -1)
        if spacing.shape[1] != len(spatial):
            raise ValueError(f"DiscriminativenessLoss: spacing {tuple(spacing.shape)} for {len(spatial)}D features.")
        gen = self.generator if self.generator is not None and self.generator.device == body.device else None
        flat_mask = body.reshape(b, -1) > 0
        anchors, has_body = sample_body_voxels(flat_mask, self.num_anchors, gen)
        leaves, _ = sample_body_voxels(flat_mask, self.num_leaves, gen)
        return self.pair_loss(features, spacing, anchors, leaves, has_body)

    def pair_loss(
        self,
        features: torch.Tensor,
        spacing: torch.Tensor,
        anchors: torch.Tensor,
        leaves: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 1 for given anchor and leaf voxels.

        Args:
            features: ``(B, C, *spatial)``.
            spacing: ``(B, 3)`` mm.
            anchors: ``(B, A)`` flat voxel indices.
            leaves: ``(B, L)`` flat voxel indices.
            valid: ``(B,)`` samples to use (default all).
        """
        b, c, *spatial = features.shape
        flat = features.reshape(b, c, -1)
        f_a = F.normalize(torch.gather(flat, 2, anchors[:, None].expand(b, c, -1)).float(), dim=1)  # (B, C, A)
        f_l = F.normalize(torch.gather(flat, 2, leaves[:, None].expand(b, c, -1)).float(), dim=1)  # (B, C, L)
        sim = torch.einsum("bca,bcl->bal", f_a, f_l)  # <f_a, f_l> = -D
        # exact pairwise differences (cdist's matrix-product shortcut moves pairs at exactly 10 mm across the line)
        dist = torch.cdist(
            voxel_coordinates_mm(anchors, tuple(spatial), spacing),
            voxel_coordinates_mm(leaves, tuple(spatial), spacing),
            compute_mode="donot_use_mm_for_euclid_dist",
        )
        far = dist >= self.min_distance_mm  # F(a), (B, A, L)
        if valid is not None:
            far = far & valid[:, None, None]
        hinge = torch.relu(self.margin + sim) * far  # relu(M - D)
        per_sample = hinge.sum((1, 2))
        n_far = far.sum((1, 2))
        used = n_far > 0
        if self.reduction == "mean":
            per_sample = per_sample / n_far.clamp_min(1)
        if bool(used.any()):
            loss = per_sample[used].mean()
        else:
            loss = features.sum() * 0.0
        active = ((hinge > 0) & far).sum() / n_far.sum().clamp_min(1)
        return loss, {"far_pairs": n_far.float().mean().detach(), "active": active.detach().float()}


class EquivarianceLoss(_Loss):
    """The equivariance loss of CLEF, eq. 2: ``L_e = -<T(f(X)), f(T(X))>`` averaged over the voxels valid in both.

    ``T(f(X))`` is the feature map of the image warped by the random affine ``T``, ``f(T(X))`` the feature map of the
    warped image; both come from one sampling grid (:class:`~monai_contrastive.networks.CLEFNet` warps image and
    features with the one function). Both are L2-normalised per voxel after warping (see the module docstring), so
    ``L_e`` lies in ``[-1, 1]`` and is -1 exactly when the network is equivariant to ``T`` on the valid voxels.

    A voxel is valid when ``T``'s sampling point lies inside the volume (``valid`` > 0.5); outside it both maps hold
    padding. The value is the mean over each sample's valid voxels, then over samples with any valid voxel; a batch
    without valid voxels gives 0 (still connected to the graph), never NaN.

    Shapes: ``warped_features`` and ``features_of_warped`` ``(B, C, *spatial)``; ``valid`` ``(B, 1, *spatial)``.
    """

    def forward(
        self, warped_features: torch.Tensor, features_of_warped: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        if warped_features.shape != features_of_warped.shape:
            raise ValueError(
                f"EquivarianceLoss: T(f(X)) {tuple(warped_features.shape)} and f(T(X)) "
                f"{tuple(features_of_warped.shape)} differ in shape."
            )
        a = F.normalize(warped_features.float(), dim=1)
        b = F.normalize(features_of_warped.float(), dim=1)
        inner = (a * b).sum(1)  # (B, *spatial)
        if valid is None:
            weights = torch.ones_like(inner)
        else:
            weights = (valid.reshape(inner.shape) > 0.5).to(inner.dtype)
        n = weights.flatten(1).sum(1)
        used = n > 0
        if not bool(used.any()):
            return inner.sum() * 0.0
        per_sample = -(inner * weights).flatten(1).sum(1) / n.clamp_min(1)
        return per_sample[used].mean()


def organ_one_hot(label: torch.Tensor, num_classes: int = 14) -> torch.Tensor:
    """Label map ``(B, 1, *spatial)`` with values ``0 .. num_classes - 1`` -> organ targets ``(B, num_classes - 1,
    *spatial)``: one channel per organ, no background channel (CLEF's fine-tuning head has one output per organ and
    §2.3 decides the background by thresholding, so the targets have no background channel either)."""
    lab = label.long()
    if lab.ndim >= 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    onehot = F.one_hot(lab.clamp_min(0), num_classes)  # (B, *spatial, K)
    return onehot.movedim(-1, 1)[:, 1:].to(torch.float32)


class OrganDiceCELoss(DiceCELoss):
    """CLEF's fine-tuning loss ("the summation between Dice loss and cross entropy loss", §2.2) for a head with one
    logit channel per organ and no background channel (§2.3 thresholds sigmoids): MONAI's ``DiceCELoss`` with the
    sigmoid Dice and the binary cross-entropy of every organ channel against :func:`organ_one_hot` targets.

    ``DiceCELoss`` itself would take a softmax cross-entropy across the organ channels, which has no target for
    background voxels and does not match the sigmoid post-processing; the binary form does.

    Args:
        num_classes: label values including background 0 (14 for FLARE22); the prediction has ``num_classes - 1``
            channels.
        kwargs: ``DiceCELoss`` arguments (``sigmoid`` is forced on, ``softmax`` / ``to_onehot_y`` off).

    Shapes: ``input`` ``(B, num_classes - 1, *spatial)`` organ logits, or ``(B, num_classes, *spatial)`` with the
    constant background logit of :class:`~monai_contrastive.networks.CLEFSegNet` first (left out of the loss);
    ``target`` ``(B, 1, *spatial)`` label map (or the organ targets already one-hot).
    """

    def __init__(self, num_classes: int = 14, **kwargs) -> None:
        kwargs.update(sigmoid=True, softmax=False, to_onehot_y=False)
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape[1] == self.num_classes:
            input = input[:, 1:]  # the constant background logit is not trained
        if input.shape[1] != self.num_classes - 1:
            raise ValueError(
                f"OrganDiceCELoss: the prediction has {input.shape[1]} channels, expected one per organ "
                f"({self.num_classes - 1}), optionally after a background channel."
            )
        if target.shape[1] == 1:
            target = organ_one_hot(target, self.num_classes)
        target = target.to(input.dtype)
        return self.lambda_dice * self.dice(input, target) + self.lambda_ce * self.bce(input, target)
