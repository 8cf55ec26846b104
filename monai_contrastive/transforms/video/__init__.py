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
"""Echocardiogram video transforms (EchoNet-Dynamic pipeline): loading, clip sampling, frame jitter, normalisation."""

from __future__ import annotations

from .array import (
    AllClips,
    ClipSample,
    LoadVideo,
    NormalizeVideo,
    RandClipSample,
    RandClipViews,
    RandFrameJitter,
    clip_starts,
    video_name,
)
from .dictionary import (
    AllClipsd,
    AllClipsD,
    AllClipsDict,
    ClipSampled,
    ClipSampleD,
    ClipSampleDict,
    LoadVideod,
    LoadVideoD,
    LoadVideoDict,
    NormalizeVideod,
    NormalizeVideoD,
    NormalizeVideoDict,
    RandClipSampled,
    RandClipSampleD,
    RandClipSampleDict,
    RandClipViewsd,
    RandClipViewsD,
    RandClipViewsDict,
    RandFrameJitterd,
    RandFrameJitterD,
    RandFrameJitterDict,
)

__all__ = [
    "AllClips",
    "ClipSample",
    "LoadVideo",
    "NormalizeVideo",
    "RandClipSample",
    "RandFrameJitter",
    "RandClipViews",
    "clip_starts",
    "video_name",
    "AllClipsd",
    "AllClipsD",
    "AllClipsDict",
    "ClipSampled",
    "ClipSampleD",
    "ClipSampleDict",
    "LoadVideod",
    "LoadVideoD",
    "LoadVideoDict",
    "NormalizeVideod",
    "NormalizeVideoD",
    "NormalizeVideoDict",
    "RandClipSampled",
    "RandClipSampleD",
    "RandClipSampleDict",
    "RandFrameJitterd",
    "RandFrameJitterD",
    "RandFrameJitterDict",
    "RandClipViewsd",
    "RandClipViewsD",
    "RandClipViewsDict",
]
