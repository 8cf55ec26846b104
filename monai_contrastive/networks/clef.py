"""CLEF's networks (Kuleshov et al., FLARE 2022, §2.2 "Architecture"): a 3D U-Net backbone with a feature head and a
decoding head for pretraining (the model owns the second forward on the affinely warped input), and the same backbone
with a fresh segmentation head for fine-tuning; plus the one warp used for images and feature maps alike."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn
from torch.utils.checkpoint import checkpoint

from monai_contrastive.networks.unet import FeatureUNet
from monai_contrastive.networks.weights import load_pretrained_weights

__all__ = ["CLEFNet", "CLEFSegNet", "PointwiseHead", "affine_warp", "clef_backbone_weights"]

# ours: BasicUNet widths giving a 33.3 M parameter backbone, next to the paper's 33.0 M (Table 2; Fig. 1 has no widths)
CLEF_UNET_FEATURES = (32, 64, 160, 320, 608, 32)


def affine_warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``x`` by the affine ``theta``: the one warp CLEF applies to the image (``T(X)``) and to the feature map
    (``T(f(X))``), so both are resampled on the identical grid.

    ``theta`` maps output to input coordinates in PyTorch's normalised convention (``affine_grid``,
    ``align_corners=False``: the volume spans [-1, 1] along each axis; coordinate 0 is the last array axis, 1 the one
    before...). Samples outside the volume are zero.

    Args:
        x: ``(B, C, *spatial)`` (2D or 3D).
        theta: ``(B, n, n + 1)`` with ``n`` spatial dims.
        mode: ``grid_sample`` interpolation.

    Returns:
        ``(warped (B, C, *spatial), valid (B, 1, *spatial))``: ``valid`` is 1 where the sampling point lies inside the
        hull of the voxel centres (no padding reaches the interpolated value), else 0.
    """
    spatial = x.shape[2:]
    if theta.ndim != 3 or theta.shape[0] != x.shape[0] or tuple(theta.shape[1:]) != (len(spatial), len(spatial) + 1):
        raise ValueError(f"affine_warp: theta {tuple(theta.shape)} does not fit an input {tuple(x.shape)}.")
    grid = F.affine_grid(theta.to(torch.float32), list(x.shape), align_corners=False)  # (B, *spatial, n)
    warped = F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False).to(x.dtype)
    sizes = torch.tensor([float(s) for s in reversed(spatial)], device=grid.device)  # grid's x is the last axis
    limit = 1.0 - 1.0 / sizes + 1e-5
    valid = (grid.abs() <= limit).all(-1)[:, None]
    return warped, valid.to(x.dtype)


class PointwiseHead(nn.Sequential):
    """Two 1x1(x1) convolutions with a ReLU between them (CLEF §2.2: "two 1x1 convolutions, applied to the output
    features"). Shapes: ``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``; no normalisation (the losses
    normalise the features, see :mod:`monai_contrastive.losses.clef`)."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int | None = None, spatial_dims: int = 3):
        conv = Conv[Conv.CONV, spatial_dims]
        hidden = int(hidden_channels or in_channels)
        super().__init__(conv(in_channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, out_channels, 1))


class _Backbone(nn.Module):
    """A :class:`~monai_contrastive.networks.FeatureUNet` returning its last decoder map, optionally with gradient
    checkpointing of every level (recomputes the forward during backward: far less activation memory at 192^3)."""

    def __init__(self, unet: FeatureUNet, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            return self._checkpointed(x)
        return self.unet(x)["decoder"]

    @torch.jit.unused
    def _checkpointed(self, x):  # no annotations: TorchScript cannot resolve postponed ones of an unused method
        """The U-Net's levels under ``torch.utils.checkpoint`` (not scripted: TorchScript exports run inference)."""
        u = self.unet

        def cp(module, *args):
            return checkpoint(module, *args, use_reentrant=False)

        x0 = cp(u.conv_0, x)
        x1 = cp(u.down_1, x0)
        x2 = cp(u.down_2, x1)
        x3 = cp(u.down_3, x2)
        x4 = cp(u.down_4, x3)
        u4 = cp(u.upcat_4, x4, x3)
        u3 = cp(u.upcat_3, u4, x2)
        u2 = cp(u.upcat_2, u3, x1)
        return cp(u.upcat_1, u2, x0)


def _unet(spatial_dims: int, in_channels: int, features: Sequence[int], norm) -> FeatureUNet:
    return FeatureUNet(spatial_dims=spatial_dims, in_channels=in_channels, features=tuple(features), norm=norm)


class CLEFNet(nn.Module):
    """The CLEF pretraining model: backbone ``f_enc`` (3D U-Net), feature head and decoding head (two 1x1x1 convs each).

    ``forward(x)`` returns ``{"embedding": f(X) (B, feature_channels, *S), "decoded": f_dec(f_enc(X)) (B, in_channels,
    *S)}``. With ``theta`` (the random affine ``T`` of each sample, ``(B, 3, 4)``, from
    :class:`~monai_contrastive.transforms.ct.RandCLEFAffined`) the model also runs the second forward of eq. 2 on
    the warped input and adds ``"warped_embedding"`` = ``T(f(X))``, ``"embedding_of_warped"`` = ``f(T(X))`` and
    ``"warp_valid"`` ``(B, 1, *S)``; image and features are warped by the one function :func:`affine_warp` with the
    same ``theta``, hence the same grid.

    Args:
        spatial_dims: 3 (2 works for tests).
        in_channels: input channels.
        feature_channels: dimension of the voxel features (the paper gives none; ours: 32).
        features: ``BasicUNet`` widths (default: 33.3 M parameters, the paper's 33.0 M).
        norm: normalisation of the U-Net (the paper does not say; ours: instance norm, batch 1).
        head_hidden: hidden width of both heads (default: the backbone's output width).
        gradient_checkpointing: recompute the backbone's activations in the backward pass.
        warp_mode: interpolation of :func:`affine_warp`.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        feature_channels: int = 32,
        features: Sequence[int] = CLEF_UNET_FEATURES,
        norm: str | tuple = ("instance", {"affine": True}),
        head_hidden: int | None = None,
        gradient_checkpointing: bool = False,
        warp_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        self.backbone = _Backbone(_unet(spatial_dims, in_channels, features, norm), gradient_checkpointing)
        width = int(features[5])
        self.feature_head = PointwiseHead(width, feature_channels, head_hidden, spatial_dims)
        self.decoding_head = PointwiseHead(width, in_channels, head_hidden, spatial_dims)
        self.warp_mode = warp_mode

    def forward(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = self.backbone(x)
        emb = self.feature_head(h)
        out = {"embedding": emb, "decoded": self.decoding_head(h)}
        if theta is not None:
            theta = theta.to(device=x.device)
            x_warped, valid = affine_warp(x, theta, self.warp_mode)
            out["embedding_of_warped"] = self.feature_head(self.backbone(x_warped))
            out["warped_embedding"], _ = affine_warp(emb, theta, self.warp_mode)
            out["warp_valid"] = valid
        return out


def clef_backbone_weights(init: str, pretrain_path: str) -> str | None:
    """The weights file of the fine-tuning backbone for ``init``: ``"random"`` -> None, ``"clef"`` -> ``pretrain_path``
    (which must exist: an error says to run the pretraining first)."""
    if init == "random":
        return None
    if init != "clef":
        raise ValueError(f"init must be 'random' or 'clef', got {init!r}.")
    if not os.path.isfile(pretrain_path):
        raise FileNotFoundError(
            f"init='clef' needs the pretrained model {pretrain_path!r}; run the pretraining (configs/pretrain.json) "
            "first, or use init='random'."
        )
    return pretrain_path


class CLEFSegNet(nn.Module):
    """The CLEF fine-tuning network: the pretraining backbone and a new head of two 1x1x1 convolutions with one output
    channel per organ (§2.2: "we transfer only the weights of the backbone U-Net, while the head is re-initialized";
    §2.3: sigmoid per channel, background where every channel is < 0.5).

    With ``background_channel`` (default) a constant logit 0 is put in front of the organ logits: after the sigmoid it
    is 0.5, so MONAI's usual ``Activations(sigmoid=True)`` + ``AsDiscrete(argmax=True)`` gives exactly §2.3's rule
    (background unless some organ reaches 0.5, else the most probable organ), every label value has an output
    channel (``channel_def`` of the bundle, MONAI Label), and zero padding from ``Invertd`` reads as background. The
    constant is not learned; the losses see the organ channels only.

    Args:
        spatial_dims, in_channels, features, norm, head_hidden, gradient_checkpointing: as :class:`CLEFNet`.
        out_channels: organs (13 for FLARE22; no background channel).
        backbone_weights: a :class:`CLEFNet` weights file whose ``backbone.*`` tensors are loaded (None: random).
        weights_key: entry of that file holding the state dict (None for a plain state dict).
        background_channel: prepend the constant background logit 0.
        organ_prior: initial bias of the organ logits, ``log(p / (1 - p))``, so that every organ starts at sigmoid
            probability ``p`` (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, §4.1 "Initialization").
            Organs cover a few per cent of a CT volume; at the default bias 0 every voxel starts at 0.5 for all 13
            organs, and the binary cross-entropy first spends its steps pushing every organ channel down. ``None``
            keeps PyTorch's default initialisation. CLEF does not say how its re-initialised head starts (§2.2); the
            value only sets the starting point of training (loaded weights replace it).

    Shapes: ``(B, in_channels, *S)`` -> logits ``(B, out_channels + 1, *S)`` (background first), or
    ``(B, out_channels, *S)`` without ``background_channel``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 13,
        features: Sequence[int] = CLEF_UNET_FEATURES,
        norm: str | tuple = ("instance", {"affine": True}),
        head_hidden: int | None = None,
        gradient_checkpointing: bool = False,
        backbone_weights: str | None = None,
        weights_key: str | None = None,
        background_channel: bool = True,
        organ_prior: float | None = None,
    ) -> None:
        super().__init__()
        self.backbone = _Backbone(_unet(spatial_dims, in_channels, features, norm), gradient_checkpointing)
        self.head = PointwiseHead(int(features[5]), out_channels, head_hidden, spatial_dims)
        if organ_prior is not None:
            if not 0.0 < float(organ_prior) < 1.0:
                raise ValueError(f"CLEFSegNet: organ_prior must be a probability in (0, 1), got {organ_prior}.")
            nn.init.constant_(self.head[-1].bias, math.log(organ_prior / (1.0 - organ_prior)))
        self.background_channel = background_channel
        if backbone_weights:
            load_pretrained_weights(self.backbone, backbone_weights, weights_key, prefix="backbone.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        organs = self.head(self.backbone(x))
        if not self.background_channel:
            return organs
        return torch.cat([torch.zeros_like(organs[:, :1]), organs], dim=1)
