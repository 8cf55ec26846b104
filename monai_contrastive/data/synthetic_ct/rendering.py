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
"""One synthetic CT case: the acquisition (spacing, orientation, storage, noise) drawn, the phantom rendered, the
intensities computed and the arrays put in the stored orientation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from monai_contrastive.data.ct_labels import CONTRAST_PHASES, FLARE22_ORGANS
from monai_contrastive.data.synthetic_ct.anatomy import Phantom
from monai_contrastive.data.synthetic_ct.tissues import LABEL_OF_TISSUE, draw_tissue_hu, tissue_intensities

__all__ = [
    "render_case",
    "ORIENTATIONS",
    "MIN_ORGAN_VOXELS",
    "IN_PLANE_SPACING_RANGE",
    "SLICE_SPACING_RANGE",
    "NOISE_SD_RANGE",
]

IN_PLANE_SPACING_RANGE = (0.6, 0.9)
"""Range of the in-plane pixel spacing (mm), drawn per case on a 1/512 mm grid."""
SLICE_SPACING_RANGE = (1.5, 5.0)
"""Range of the slice spacing (mm), drawn per case in 0.25 mm steps."""
NOISE_SD_RANGE = (10.0, 25.0)
"""Range of the image noise standard deviation (HU)."""
MIN_ORGAN_VOXELS = 8
"""Every labelled case holds at least this many voxels of each of the 13 organs."""
ORIENTATIONS: tuple[str, ...] = ("RAS", "LAS", "LPS", "LPI")
"""Orientation codes (``nibabel.aff2axcodes``) of the stored volumes, drawn per case."""

_MAX_ATTEMPTS = 20


def render_case(rng: np.random.Generator, matrix: int, phase: str, require_organs: bool = True) -> dict[str, Any]:
    """Draw and render one case.

    Args:
        rng: the case's random generator (consumed).
        matrix: in-plane matrix size.
        phase: contrast phase, one of ``CONTRAST_PHASES``.
        require_organs: redraw the anatomy until every organ holds at least ``MIN_ORGAN_VOXELS`` voxels.

    Returns:
        ``{"image": int16 HU array, "label": uint8 array, "affine": 4x4, "spacing": (3,), "orientation": str,
        "offset_storage": bool, "canonical_affine": 4x4}``; image and label in the stored (flipped) array order.
    """
    if phase not in CONTRAST_PHASES:
        raise ValueError(f"phase must be one of {CONTRAST_PHASES}, got {phase!r}.")
    # acquisition: spacing on the grids scanners report, orientation and storage of the converter, noise
    pixel_spacing = int(rng.integers(308, 460 + 1)) / 512.0
    slice_spacing = int(rng.integers(6, 20 + 1)) * 0.25
    orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    offset_storage = bool(rng.random() < 0.5)
    noise_sd = float(np.clip(rng.uniform(10.0, 22.0) * math.sqrt(3.0 / slice_spacing), *NOISE_SD_RANGE))
    hu = draw_tissue_hu(rng, phase)
    for _ in range(_MAX_ATTEMPTS):
        phantom = Phantom(rng, matrix, pixel_spacing, slice_spacing)
        tissue = phantom.render()
        label = LABEL_OF_TISSUE[tissue]
        counts = np.bincount(label.ravel(), minlength=len(FLARE22_ORGANS) + 1)
        if not require_organs or counts[1:].min() >= MIN_ORGAN_VOXELS:
            break
    else:  # pragma: no cover - the layout keeps every organ well above the minimum
        raise RuntimeError(f"Could not place every organ with >= {MIN_ORGAN_VOXELS} voxels in {_MAX_ATTEMPTS} draws.")
    image = tissue_intensities(rng, tissue, phantom.field_lo, phantom.field_mid, hu, phase, noise_sd)
    # storage order: flip the canonical RAS array and move the affine's origin to the new first voxel
    affine = phantom.affine.copy()
    for axis, (code, positive) in enumerate(zip(orientation, "RAS")):
        if code != positive:
            image = np.flip(image, axis)
            label = np.flip(label, axis)
            affine[:3, 3] += affine[:3, axis] * (image.shape[axis] - 1)
            affine[:3, axis] *= -1.0
    return {
        "image": np.ascontiguousarray(image),
        "label": np.ascontiguousarray(label),
        "affine": affine,
        "canonical_affine": phantom.affine,
        "spacing": np.array([pixel_spacing, pixel_spacing, slice_spacing]),
        "orientation": orientation,
        "offset_storage": offset_storage,
    }
