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
"""CT segmentation transforms that MONAI lacks: case validation after loading, and the random axial slice sampler
(a list of MONAI transforms) of the 2D networks."""

from __future__ import annotations

from .array import (
    FelzenszwalbSuperpixels,
    LoadVolume,
    OrganPatches,
    PercentileNormalize,
    RandResizedCrop,
    ValidateCT,
    body_mask,
    ct_name,
)
from .dictionary import (
    CoarseSegmentd,
    CoarseSegmentD,
    CoarseSegmentDict,
    FelzenszwalbSuperpixelsd,
    FelzenszwalbSuperpixelsD,
    FelzenszwalbSuperpixelsDict,
    LoadVolumed,
    LoadVolumeD,
    LoadVolumeDict,
    OrganPatchesd,
    OrganPatchesD,
    OrganPatchesDict,
    PercentileNormalized,
    PercentileNormalizeD,
    PercentileNormalizeDict,
    RandResizedCropd,
    RandResizedCropD,
    RandResizedCropDict,
    ResampleToSpacingd,
    ResampleToSpacingD,
    ResampleToSpacingDict,
    ValidateCTd,
    ValidateCTD,
    ValidateCTDict,
    axial_slice_sampler,
)

__all__ = [
    "CoarseSegmentd",
    "CoarseSegmentD",
    "CoarseSegmentDict",
    "FelzenszwalbSuperpixels",
    "FelzenszwalbSuperpixelsd",
    "FelzenszwalbSuperpixelsD",
    "FelzenszwalbSuperpixelsDict",
    "body_mask",
    "LoadVolume",
    "LoadVolumed",
    "LoadVolumeD",
    "LoadVolumeDict",
    "OrganPatches",
    "OrganPatchesd",
    "OrganPatchesD",
    "OrganPatchesDict",
    "PercentileNormalize",
    "PercentileNormalized",
    "PercentileNormalizeD",
    "PercentileNormalizeDict",
    "RandResizedCrop",
    "RandResizedCropd",
    "RandResizedCropD",
    "RandResizedCropDict",
    "ResampleToSpacingd",
    "ResampleToSpacingD",
    "ResampleToSpacingDict",
    "ValidateCT",
    "ct_name",
    "ValidateCTd",
    "ValidateCTD",
    "ValidateCTDict",
    "axial_slice_sampler",
]
