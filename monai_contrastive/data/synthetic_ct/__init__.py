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
"""Synthetic contrast-enhanced abdominal CT with the 13 FLARE22 organ labels: the embedded demo data of the CT
segmentation bundles (multi-organ segmentation; pretraining reads the unlabelled pool; the contrast phase of every
case is in the datalist).

- :mod:`.tissues`: HU by tissue and contrast phase, the organ label of each tissue, the intensity model;
- :mod:`.anatomy`: the phantom (body, skeleton, thorax, bowel, vessels, organs) in life-size millimetres;
- :mod:`.rendering`: one case (acquisition drawn, phantom rendered, stored orientation);
- :mod:`.dataset`: :func:`generate_ct_demo`, the NIfTI files and datalist on disk, cached.

What the phantom contains and how it differs from real CT: ``docs/synthetic_ct.md`` of the ``lrc_multiorgan_ct``
bundle.
"""

from __future__ import annotations

from .anatomy import REFERENCE_FOV_MM
from .dataset import generate_ct_demo
from .rendering import (
    IN_PLANE_SPACING_RANGE,
    MIN_ORGAN_VOXELS,
    NOISE_SD_RANGE,
    ORIENTATIONS,
    SLICE_SPACING_RANGE,
    render_case,
)
from .tissues import HU_RANGES

__all__ = [
    "generate_ct_demo",
    "render_case",
    "HU_RANGES",
    "ORIENTATIONS",
    "MIN_ORGAN_VOXELS",
    "REFERENCE_FOV_MM",
    "IN_PLANE_SPACING_RANGE",
    "SLICE_SPACING_RANGE",
    "NOISE_SD_RANGE",
]
