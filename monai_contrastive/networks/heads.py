"""Heads that map encoder features to named outputs (projections for contrastive losses, regression)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

__all__ = ["DenseProjectionHead", "ProjectionHead", "StandardizedRegressionHead"]


class ProjectionHead(nn.Module):
    """Contrastive projection: dense -> ReLU -> dense(out_dim) -> L2 normalisation (AdaCon §III-C; SimCLR/MoCo v2).

    Shapes: ``(B, in_dim)`` -> ``(B, out_dim)`` with unit rows. ``hidden_dim=0`` gives a single linear layer
    followed by the normalisation (MoCo v1: "a fc layer to 128-d").
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        super().__init__()
        if hidden_dim == 0:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))
        else:
            hidden_dim = hidden_dim or in_dim
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim > 2:  # a feature map: global average pooling
            x = x.flatten(2).mean(2)
        return F.normalize(self.net(x), dim=1)


class DenseProjectionHead(nn.Module):
    """Pixel (voxel) embeddings: 1x1 conv [-> ReLU -> 1x1 conv] -> L2 normalisation over channels.

    For dense contrastive losses on decoder features (LRC §3.1.2: "pixel embeddings from the last decoder layer,
    normalised over channels"; CLEF's voxel features). Shapes: ``(B, C, *spatial)`` -> ``(B, out_channels,
    *spatial)`` with unit vectors along dim 1.

    Args:
        in_channels: channels of the feature map.
        out_channels: embedding size.
        hidden_channels: None or 0 for a single 1x1 conv; otherwise the width of a hidden 1x1 conv layer.
        spatial_dims: 2 or 3.
    """

    def __init__(
        self, in_channels: int, out_channels: int = 128, hidden_channels: int | None = None, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        if hidden_channels:
            self.net = nn.Sequential(
                conv(in_channels, hidden_channels, 1), nn.ReLU(inplace=True), conv(hidden_channels, out_channels, 1)
            )
        else:
            self.net = nn.Sequential(conv(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class StandardizedRegressionHead(nn.Module):
    """Linear regression head ``pred = target_std * (W f + b) + target_mean`` (AdaCon Fig. 2's regressor).

    ``target_mean``/``target_std`` are buffers saved in the state dict. Predicting standardised labels matters for
    training from scratch: one SGD step at lr 1e-2 moves an unscaled output by about ``lr * ||features||^2``, far
    more than the spread of BMD labels (sd 0.13 g/cm^2), and training diverges.

    Args:
        in_dim: feature size.
        out_channels: regression outputs.
        target_mean: mean of the training labels (None: 0, and ``bias_init`` may set the bias instead).
        target_std: standard deviation of the training labels (None or 0: 1).
        bias_init: initial bias in label units (the authors' LVEF code sets it to the training mean EF, 55.6);
            ignored when ``target_mean`` is given.

    Shapes: ``(B, in_dim)`` -> ``(B, out_channels)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_channels: int = 1,
        target_mean: float | None = None,
        target_std: float | None = None,
        bias_init: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_channels)
        self.register_buffer("target_mean", torch.tensor(float(target_mean) if target_mean is not None else 0.0))
        self.register_buffer("target_std", torch.tensor(float(target_std) if target_std else 1.0))
        if target_mean is not None:
            nn.init.zeros_(self.linear.bias)
        elif bias_init is not None:
            with torch.no_grad():
                self.linear.bias.copy_(torch.as_tensor(bias_init, dtype=torch.float32).expand(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim > 2:
            x = torch.flatten(x, 1)
        return self.linear(x) * self.target_std + self.target_mean
