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
"""Network building blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["InputNormalization"]


class InputNormalization(nn.Module):
    """
    Per-channel ``(x - mean[c]) / std[c]`` as the first layer of a network, in float32 whatever the input dtype.

    Lets a data pipeline hand uint8 videos to the device (a quarter of the bytes of float32 to move between
    DataLoader workers and to the GPU) and normalise there; the statistics are buffers, saved with every checkpoint,
    so inference on raw uint8 clips needs nothing else. EchoNet-Dynamic / AdaCon normalise echo videos with the
    per-channel mean and standard deviation of training videos (0-255 scale, see
    :py:func:`monai_contrastive.data.echonet.fit_video_normalization`).

    Args:
        mean: one value per channel (or a single value for all).
        std: one value per channel (or a single value), > 0.
        channel_dim: the channel dimension of the input (1 for (B, C, ...) batches).

    Shapes: input (B, C, ...) of any numeric dtype; output the same shape, float32 (or the input's floating dtype).
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float, channel_dim: int = 1) -> None:
        super().__init__()
        m = torch.atleast_1d(torch.as_tensor(mean, dtype=torch.float32)).flatten()
        s = torch.atleast_1d(torch.as_tensor(std, dtype=torch.float32)).flatten()
        if m.shape != s.shape or not torch.isfinite(m).all() or not (s > 0).all():
            raise ValueError(f"InputNormalization: mean and std must have equal lengths, std > 0; got {mean}, {std}.")
        self.register_buffer("mean", m)
        self.register_buffer("std", s)
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[self.channel_dim]
        if self.mean.numel() not in (1, channels):
            raise ValueError(
                f"InputNormalization: input has {channels} channels (dim {self.channel_dim}) but the statistics have "
                f"{self.mean.numel()}."
            )
        shape = [1] * x.ndim
        shape[self.channel_dim] = -1
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return (x.to(dtype) - self.mean.to(dtype).view(shape)) / self.std.to(dtype).view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"
