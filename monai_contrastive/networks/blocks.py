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

import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from monai_contrastive.io import read_state_dict

__all__ = ["InputNormalization"]


class InputNormalization(nn.Module):
    """
    Per-channel ``(x - mean[c]) / std[c]`` as the first layer of a network, in float32 whatever the input dtype.

    Lets a data pipeline hand uint8 videos to the device (a quarter of the bytes of float32 to move between
    DataLoader workers and to the GPU) and normalise there; the statistics are buffers, saved with every checkpoint,
    so inference on raw uint8 clips needs nothing else. EchoNet-Dynamic / AdaCon normalise echo videos with the
    per-channel mean and standard deviation of training videos (0-255 scale, see
    :py:func:`monai_contrastive.data.video.fit_video_normalization`).

    The statistics can come from the state dict, like the ECDF's: build it with ``num_channels`` only (an inference
    config needs no statistics file) and load a checkpoint; the buffers take the checkpoint's values and length.
    Until then it is the identity (mean 0, std 1) and warns once when called.

    Args:
        mean: one value per channel (or a single value for all); None to take it from a state dict.
        std: one value per channel (or a single value), > 0; None with ``mean``.
        channel_dim: the channel dimension of the input (1 for (B, C, ...) batches).
        num_channels: size of the placeholder statistics when ``mean``/``std`` are None.

    Shapes: input (B, C, ...) of any numeric dtype; output the same shape, float32 (or the input's floating dtype).
    """

    def __init__(
        self,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        channel_dim: int = 1,
        num_channels: int = 1,
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("InputNormalization: give both mean and std, or neither (to load them from a state dict).")
        self.has_stats = mean is not None
        if mean is None:
            mean, std = [0.0] * int(num_channels), [1.0] * int(num_channels)
        m = torch.atleast_1d(torch.as_tensor(mean, dtype=torch.float32)).flatten()
        s = torch.atleast_1d(torch.as_tensor(std, dtype=torch.float32)).flatten()
        if m.shape != s.shape or not torch.isfinite(m).all() or not (s > 0).all():
            raise ValueError(f"InputNormalization: mean and std must have equal lengths, std > 0; got {mean}, {std}.")
        self.register_buffer("mean", m)
        self.register_buffer("std", s)
        self.channel_dim = channel_dim

    @staticmethod
    def stats_from_checkpoint(
        path: str, key: str | None = "model", prefix: str = "input_norm."
    ) -> tuple[list[float], list[float]]:
        """The ``(mean, std)`` stored in a checkpoint (a dict holding the state dict under ``key``, or a bare state
        dict), e.g. to pad clips with the mean colour at inference without a separate statistics file."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path!r} not found; train the bundle first.")
        state = read_state_dict(path, key, key_optional=True, what="checkpoint")
        names = [prefix + "mean", prefix + "std"]
        if not all(n in state for n in names):
            raise KeyError(f"checkpoint {path!r} has no input normalisation ({names[0]!r}, {names[1]!r}).")
        return state[names[0]].tolist(), state[names[1]].tolist()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):
        # the statistics' length is only known from the checkpoint: resize the buffers before the copy
        for name in ("mean", "std"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        if prefix + "mean" in state_dict and prefix + "std" in state_dict:
            self.has_stats = True
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_stats:
            warnings.warn("InputNormalization has no statistics yet (mean 0, std 1): load a checkpoint first.")
            self.has_stats = True  # warn once
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
