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
"""CT segmentation transforms that MONAI lacks: case validation after loading, the random axial slice sampler (a list
of MONAI transforms) of the 2D networks, and CLEF's preprocessing, random affine and post-processing."""

from __future__ import annotations

from .array import (
    AboveHU,
    AsOrganLabels,
    CLEFPreprocess,
    FelzenszwalbSuperpixels,
    LoadVolume,
    RandCLEFAffine,
    ValidateCT,
    body_mask,
    check_ct_volume,
    ct_name,
    voxel_spacing,
)
from .dictionary import (
    AsOrganLabelsd,
    AsOrganLabelsD,
    AsOrganLabelsDict,
    CLEFPreprocessd,
    CLEFPreprocessD,
    CLEFPreprocessDict,
    FelzenszwalbSuperpixelsd,
    FelzenszwalbSuperpixelsD,
    FelzenszwalbSuperpixelsDict,
    LoadVolumed,
    LoadVolumeD,
    LoadVolumeDict,
    RandCLEFAffined,
    RandCLEFAffineD,
    RandCLEFAffineDict,
    ResampleToSpacingd,
    ResampleToSpacingD,
    ResampleToSpacingDict,
    ValidateCTd,
    ValidateCTD,
    ValidateCTDict,
    axial_slice_sampler,
)

__all__ = [
    "AboveHU",
    "AsOrganLabels",
    "AsOrganLabelsd",
    "AsOrganLabelsD",
    "AsOrganLabelsDict",
    "CLEFPreprocess",
    "CLEFPreprocessd",
    "CLEFPreprocessD",
    "CLEFPreprocessDict",
    "RandCLEFAffine",
    "RandCLEFAffined",
    "RandCLEFAffineD",
    "RandCLEFAffineDict",
    "check_ct_volume",
    "voxel_spacing",
    "FelzenszwalbSuperpixels",
    "FelzenszwalbSuperpixelsd",
    "FelzenszwalbSuperpixelsD",
    "FelzenszwalbSuperpixelsDict",
    "body_mask",
    "LoadVolume",
    "LoadVolumed",
    "LoadVolumeD",
    "LoadVolumeDict",
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
