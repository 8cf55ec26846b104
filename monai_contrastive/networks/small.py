# Copyright (c) MONAI Consortium and monai-contrastive contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Small backbones for CPU demos (not the papers' networks, which stay the bundles' defaults)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FramePoolVideoNet"]


class FramePoolVideoNet(nn.Module):
    """
    A small video backbone for the LVEF demo: a 2D CNN shared by all frames, then the maximum, minimum and mean of
    each per-frame feature over time, then a fully connected layer.

    Why this shape: EF is a function of the extremes of the LV cavity size over the cardiac cycle
    (``EF = 1 - ESV / EDV``). A per-frame encoder can measure the cavity (a spatial average of a "cavity" map is
    its area) and the temporal max / min pick end-diastole and end-systole wherever they fall in the clip. A
    from-scratch R(2+1)D-18 averages over time at the end and has to learn those extremes with 31 M parameters,
    which it does not do in a few CPU minutes (see the bundle README). This network has ~0.2 M parameters.

    It ends with an ``fc`` attribute (the identity) like torchvision's ``r2plus1d_18``, and its default
    ``feature_dim`` is R(2+1)D-18's 512, so it drops into the bundle's ``network_def`` (``fc_name="fc"``,
    ``feature_dim=512``) by replacing ``backbone`` alone, in ``train.json`` and ``inference.json`` alike.

    Args:
        in_channels: input channels (3 for EchoNet-Dynamic AVIs).
        channels: output channels of the conv stages; every stage but the first halves the resolution.
        feature_dim: size of the output features.

    Shapes: input (B, C, T, H, W); output (B, feature_dim).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64), feature_dim: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(channels):
            layers += [
                nn.Conv2d(prev, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            prev = c
        self.frame_encoder = nn.Sequential(*layers)
        self.temporal = nn.Sequential(nn.Linear(3 * prev, feature_dim), nn.ReLU(inplace=True))
        self.fc: nn.Module = nn.Identity()  # the classifier slot that RegressionContrastiveNet(fc_name="fc") empties
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        f = self.frame_encoder(frames).mean(dim=(2, 3)).reshape(b, t, -1)  # (B, T, C'): spatial averages per frame
        stats = torch.cat([f.amax(dim=1), f.amin(dim=1), f.mean(dim=1)], dim=1)
        return self.fc(self.temporal(stats))
