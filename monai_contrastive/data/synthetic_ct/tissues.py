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
"""Tissues of the synthetic CT phantom: their HU by contrast phase, the organ label each carries, and the image model
that turns a tissue-id volume into CT intensities (texture, partial volume, noise)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

from monai_contrastive.data.ct_labels import CONTRAST_PHASES, FLARE22_ORGANS

__all__ = [
    "HU_RANGES",
    "HU_MIN",
    "HU_MAX",
    "Tissue",
    "TISSUES",
    "TISSUE_ID",
    "LABEL_OF_TISSUE",
    "PAINTABLE",
    "draw_tissue_hu",
    "tissue_intensities",
]

HU_MIN, HU_MAX = -1024, 3071
"""The range of stored CT values (12-bit CT, as int16)."""

HU_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    # tissue class -> phase -> (low, high) HU; one value per class and case is drawn uniformly from the range
    "air": {p: (-1000.0, -1000.0) for p in CONTRAST_PHASES},
    "lung": {p: (-880.0, -820.0) for p in CONTRAST_PHASES},
    "fat": {p: (-120.0, -80.0) for p in CONTRAST_PHASES},
    "muscle": {"non_contrast": (40, 50), "arterial": (50, 60), "portal_venous": (55, 65), "delayed": (55, 60)},
    "cortical_bone": {p: (700.0, 1200.0) for p in CONTRAST_PHASES},
    "trabecular_bone": {p: (150.0, 300.0) for p in CONTRAST_PHASES},
    "disc": {p: (70.0, 100.0) for p in CONTRAST_PHASES},
    "csf": {p: (5.0, 25.0) for p in CONTRAST_PHASES},
    "heart": {"non_contrast": (40, 50), "arterial": (180, 260), "portal_venous": (130, 160), "delayed": (100, 115)},
    "gi_wall": {"non_contrast": (35, 45), "arterial": (80, 100), "portal_venous": (80, 100), "delayed": (60, 70)},
    "esophagus": {"non_contrast": (35, 45), "arterial": (60, 80), "portal_venous": (70, 90), "delayed": (60, 70)},
    "fluid": {p: (0.0, 20.0) for p in CONTRAST_PHASES},
    "food": {p: (20.0, 60.0) for p in CONTRAST_PHASES},
    "gas": {p: (-1000.0, -1000.0) for p in CONTRAST_PHASES},
    "faeces": {p: (-60.0, 30.0) for p in CONTRAST_PHASES},
    "portal_vein": {
        "non_contrast": (40, 50),
        "arterial": (60, 100),
        "portal_venous": (160, 200),
        "delayed": (100, 120),
    },
    "aorta": {"non_contrast": (40, 50), "arterial": (250, 350), "portal_venous": (150, 180), "delayed": (100, 120)},
    "ivc": {"non_contrast": (40, 50), "arterial": (50, 90), "portal_venous": (130, 150), "delayed": (100, 110)},
    "liver": {"non_contrast": (55, 65), "arterial": (65, 80), "portal_venous": (100, 120), "delayed": (80, 90)},
    "kidney_cortex": {
        "non_contrast": (30, 40),
        "arterial": (150, 200),
        "portal_venous": (150, 180),
        "delayed": (100, 120),
    },
    "kidney_medulla": {
        "non_contrast": (25, 35),
        "arterial": (70, 110),
        "portal_venous": (140, 175),
        "delayed": (105, 130),
    },
    "collecting_system": {
        "non_contrast": (0, 15),
        "arterial": (0, 15),
        "portal_venous": (10, 40),
        "delayed": (300, 600),
    },
    "spleen": {"non_contrast": (45, 50), "arterial": (100, 140), "portal_venous": (110, 125), "delayed": (90, 100)},
    "pancreas": {"non_contrast": (40, 50), "arterial": (100, 130), "portal_venous": (90, 110), "delayed": (70, 80)},
    "adrenal": {"non_contrast": (10, 30), "arterial": (40, 60), "portal_venous": (50, 70), "delayed": (40, 50)},
    "bile": {p: (0.0, 20.0) for p in CONTRAST_PHASES},
    "calcification": {p: (400.0, 900.0) for p in CONTRAST_PHASES},
}
"""HU range per tissue class and contrast phase (the published values by phase for abdominal organs, vessels, fat,
bone and fluid; heart, medulla, food, faeces, disc, CSF and calcification have no such table and take plausible
values)."""


class Tissue(NamedTuple):
    """One tissue of the phantom: its HU class (a key of :data:`HU_RANGES`), the organ label it carries (None:
    background) and the SDs (HU) of its organ-scale and fine texture."""

    name: str
    hu_class: str
    organ: str | None
    texture_low_sd: float
    texture_mid_sd: float


TISSUES: tuple[Tissue, ...] = tuple(
    Tissue(*row)
    for row in (
        ("air", "air", None, 0.0, 0.0),
        ("lung", "lung", None, 25.0, 15.0),
        ("fat_subcutaneous", "fat", None, 6.0, 4.0),
        ("fat_visceral", "fat", None, 8.0, 6.0),
        ("muscle", "muscle", None, 4.0, 3.0),
        ("cortical_bone", "cortical_bone", None, 60.0, 40.0),
        ("trabecular_bone", "trabecular_bone", None, 20.0, 35.0),
        ("disc", "disc", None, 5.0, 3.0),
        ("csf", "csf", None, 3.0, 2.0),
        ("diaphragm", "muscle", None, 3.0, 2.0),
        ("heart", "heart", None, 8.0, 4.0),
        ("bowel_wall", "gi_wall", None, 4.0, 3.0),
        ("bowel_fluid", "fluid", None, 3.0, 2.0),
        ("gas", "gas", None, 0.0, 0.0),
        ("faeces", "faeces", None, 30.0, 60.0),
        ("portal_vein", "portal_vein", None, 3.0, 2.0),
        ("artery", "aorta", None, 4.0, 2.0),
        ("vein", "ivc", None, 4.0, 2.0),
        ("sinus_fat", "fat", None, 8.0, 6.0),
        ("liver", "liver", "liver", 5.0, 3.0),
        ("liver_portal_vein", "portal_vein", "liver", 3.0, 2.0),
        ("liver_hepatic_vein", "ivc", "liver", 3.0, 2.0),
        ("right_kidney_cortex", "kidney_cortex", "right kidney", 5.0, 3.0),
        ("right_kidney_medulla", "kidney_medulla", "right kidney", 5.0, 3.0),
        ("right_kidney_pelvis", "collecting_system", "right kidney", 3.0, 2.0),
        ("spleen", "spleen", "spleen", 4.0, 3.0),
        ("pancreas", "pancreas", "pancreas", 5.0, 9.0),
        ("aorta", "aorta", "aorta", 4.0, 2.0),
        ("aorta_calcification", "calcification", "aorta", 0.0, 0.0),
        ("ivc", "ivc", "inferior vena cava", 4.0, 2.0),
        ("right_adrenal", "adrenal", "right adrenal gland", 4.0, 3.0),
        ("left_adrenal", "adrenal", "left adrenal gland", 4.0, 3.0),
        ("gallbladder", "bile", "gallbladder", 2.0, 1.0),
        ("esophagus_wall", "esophagus", "esophagus", 4.0, 3.0),
        ("esophagus_lumen", "gas", "esophagus", 0.0, 0.0),
        ("stomach_wall", "gi_wall", "stomach", 4.0, 3.0),
        ("stomach_fluid", "fluid", "stomach", 3.0, 2.0),
        ("stomach_gas", "gas", "stomach", 0.0, 0.0),
        ("stomach_food", "food", "stomach", 15.0, 25.0),
        ("duodenum_wall", "gi_wall", "duodenum", 4.0, 3.0),
        ("duodenum_fluid", "fluid", "duodenum", 3.0, 2.0),
        ("duodenum_gas", "gas", "duodenum", 0.0, 0.0),
        ("left_kidney_cortex", "kidney_cortex", "left kidney", 5.0, 3.0),
        ("left_kidney_medulla", "kidney_medulla", "left kidney", 5.0, 3.0),
        ("left_kidney_pelvis", "collecting_system", "left kidney", 3.0, 2.0),
    )
)
"""Every tissue the phantom paints; a volume of tissue ids indexes this tuple."""
TISSUE_ID: dict[str, int] = {t.name: i for i, t in enumerate(TISSUES)}
"""Tissue name -> id (its index in :data:`TISSUES`)."""
LABEL_OF_TISSUE = np.array(
    [0 if t.organ is None else FLARE22_ORGANS.index(t.organ) + 1 for t in TISSUES], dtype=np.uint8
)
"""Tissue id -> label value (``FLARE22_ORGANS`` index + 1, 0 background)."""
# tissues that organs and bowel may not overwrite: outside the cavity, muscle, skeleton
_PROTECTED = ("air", "fat_subcutaneous", "muscle", "cortical_bone", "trabecular_bone", "disc", "csf")
PAINTABLE = np.ones(len(TISSUES), dtype=bool)
PAINTABLE[[TISSUE_ID[n] for n in _PROTECTED]] = False
"""Tissue id -> whether an organ or the bowel may be painted over it."""


def draw_tissue_hu(rng: np.random.Generator, phase: str) -> dict[str, float]:
    """One mean HU per tissue class for a case in ``phase``, drawn uniformly from :data:`HU_RANGES`."""
    hu = {name: float(rng.uniform(*ranges[phase])) for name, ranges in HU_RANGES.items()}
    # portal-venous / delayed nephrogram: medulla close to the cortex (homogeneous), not independent of it
    if phase == "portal_venous":
        hu["kidney_medulla"] = hu["kidney_cortex"] - float(rng.uniform(0.0, 12.0))
    elif phase == "delayed":
        hu["kidney_medulla"] = hu["kidney_cortex"] + float(rng.uniform(0.0, 12.0))
    return hu


def tissue_intensities(
    rng: np.random.Generator,
    tissue: np.ndarray,
    texture_low: np.ndarray,
    texture_mid: np.ndarray,
    hu: dict[str, float],
    phase: str,
    noise_sd: float,
) -> np.ndarray:
    """The CT image of a tissue-id volume: mean HU per tissue + texture, partial-volume blur, correlated noise.

    Args:
        rng: the case's random generator (draws the noise).
        tissue: tissue ids (indices into :data:`TISSUES`), the canonical volume.
        texture_low, texture_mid: unit-SD texture fields of the volume's shape (organ-scale and fine), scaled per
            tissue by its texture SDs.
        hu: mean HU per tissue class (:func:`draw_tissue_hu`).
        phase: the contrast phase.
        noise_sd: image noise SD (HU).

    Returns:
        int16 HU, clipped to [-1024, 3071].
    """
    hu_lut = np.array([hu[t.hu_class] for t in TISSUES], dtype=np.float32)
    lo_lut = np.array([t.texture_low_sd for t in TISSUES], dtype=np.float32)
    mid_lut = np.array([t.texture_mid_sd for t in TISSUES], dtype=np.float32)
    if phase == "arterial":  # arterial spleen: mottled (zebra) enhancement
        lo_lut[TISSUE_ID["spleen"]], mid_lut[TISSUE_ID["spleen"]] = 10.0, 22.0
    if phase == "delayed":
        lo_lut[[TISSUE_ID["right_kidney_pelvis"], TISSUE_ID["left_kidney_pelvis"]]] = 40.0
    image = hu_lut[tissue]
    image += lo_lut[tissue] * texture_low
    image += mid_lut[tissue] * texture_mid
    # partial volume: blur over about one voxel (in millimetres the slice profile is the wider one)
    image = gaussian_filter(image, sigma=(0.55, 0.55, 0.45), mode="nearest", truncate=3.0)
    # CT noise: white noise correlated in-plane by the reconstruction kernel, scaled to the case's SD
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    kernel = float(rng.uniform(0.5, 0.8))
    noise = gaussian_filter(noise, sigma=(kernel, kernel, 0.0), mode="wrap", truncate=3.0)
    noise *= noise_sd / float(noise.std())
    image += noise
    return np.clip(np.rint(image), HU_MIN, HU_MAX).astype(np.int16)
