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
"""
Synthetic contrast-enhanced abdominal CT with the 13 FLARE22 organ labels: the embedded demo data of the CT
segmentation bundles (multi-organ segmentation; LRC / MoCo pretraining reads the unlabelled pool; DCC-CL reads the
contrast phase of every case).

Each case is a NIfTI volume written the way converted clinical CT comes: int16 Hounsfield units, about half of the
cases stored as ``HU + 1024`` with ``scl_slope = 1`` and ``scl_inter = -1024`` (a reader ignoring the scaling
sees those cases 1024 HU too bright), the others as plain HU with ``scl_slope = 1``, ``scl_inter = 0``;
an affine with the case's spacing (in-plane 0.6-0.9 mm on a 1/512 mm grid, slices 1.5-5 mm in 0.25 mm steps) and
one of the orientations in :py:data:`ORIENTATIONS` (``RAS``, ``LAS``, ``LPS``, ``LPI``: flipped axes with negative
diagonal entries, as converters write them). Every case is rendered on one canonical RAS grid and then flipped,
with the affine adjusted, so the anatomy is the same in world coordinates whatever the storage order (the liver is
at larger RAS ``x``, i.e. on the patient's right, in every file). A label map (uint8, values ``i + 1`` for
``FLARE22_ORGANS[i]``, 0 background) shares the image's shape and affine.

The phantom, in the patient frame (x to the patient's right, y anterior, z superior, millimetres of a life-size
adult before scaling):

* body: an ellipse-like cross-section (posterior side flattened as on the table, low-order harmonics, size
  changing along z): a subcutaneous fat layer (thickness varying around the body), an abdominal muscle wall and
  an inner cavity of visceral fat; air outside;
* skeleton: vertebral bodies with a cortical shell and trabecular core separated by intervertebral discs, spinal
  canal, lamina, spinous and transverse processes, paraspinal muscles, psoas muscles growing caudally, ribs in the
  wall of the upper slices (descending anteriorly, the lowest ones short), iliac wings in the lowest slices;
* thorax above two diaphragmatic domes (right higher): lung bases, heart, mediastinal fat;
* bowel: colon frame (ascending, transverse, descending) with faeces and gas pockets, small-bowel loops holding
  fluid, gas or both (gas on the non-dependent, anterior side);
* unlabelled vessels: portal / splenic / superior mesenteric veins, superior mesenteric artery, renal veins,
  iliac vessels; hepatic and portal branches inside the liver (labelled liver, enhancing as veins);
* the 13 organs, each a smooth shape (ellipsoids with low-frequency surface wobble, or tubes swept along a
  Catmull-Rom centre line with varying radius), placed as in ``shared/notes/ct_facts.md``: liver right-anterior
  under the right dome (with a sloping inferior surface), gallbladder under its inferior surface, stomach
  left-anterior (wall, fluid or food, gas on the anterior side), duodenal C-loop around the pancreatic head,
  pancreas crossing anterior to the aorta towards the splenic hilum, spleen left-posterior, kidneys paravertebral
  (right lower; cortex, medulla with pyramids, sinus fat and collecting system; the kidney label holds the
  parenchyma and the collecting system, not the sinus fat), aorta left-anterior of the spine (occasional wall
  calcifications), IVC right of the aorta (intrahepatic part included), esophagus next to the aorta in the upper
  slices down to the cardia, adrenals above the upper poles.

Per case: every position and size is jittered (typically 5-10 mm and 10-15 %), the skeleton / organ size by a
common factor 0.9-1.05 and the fat thickness 8-35 mm; the whole patient is rotated in-plane by up to 4 degrees
and deformed by a smooth random displacement field (a few sinusoids, up to ~8 mm); organ surfaces wobble.

Intensities: the contrast phase (one of ``CONTRAST_PHASES``; balanced: every block of 4 consecutive cases of a
pool holds each phase once) sets each tissue's HU, drawn per case uniformly from the range in :py:data:`HU_RANGES`
(the ct_facts table; kidneys show corticomedullary differentiation in the arterial phase and an opacified
collecting system in the delayed phase, the gallbladder never enhances, the spleen is mottled in the arterial
phase). On top: low-frequency organ texture, partial volume (the piecewise-constant tissue image is blurred by a
Gaussian of ~0.55 voxel in-plane and 0.45 slice), and correlated noise with SD 10-25 HU (larger for thin slices).
Values are clipped to [-1024, 3071] and rounded.

How it differs from real CT:

* miniature anatomy: the matrix is small (default 128 instead of 512) while the spacing is real, so the anatomy is
  scaled by ``scale = matrix * in-plane spacing / 350 mm`` (about 0.22-0.33 at matrix 128, about 1 at 512), keeping
  relative sizes: a case looks like a 512 x 512 scan resampled to the matrix, except for the slice spacing, which is
  not scaled (slices 1.5-5 mm through a miniature body are relatively thicker than in real CT). The number of slices
  covers the scaled abdomen (renal lower poles to the top of the right dome, plus random margins that show lung
  bases and heart above or iliac wings below): at least ``max(8, round(0.16 * matrix))`` slices (20 at matrix 128),
  typically 20-50 at matrix 128;
* minimum sizes: structures that would become sub-voxel are thickened, so small structures (adrenal limbs,
  esophagus, vessels, bowel walls, bone cortex, ribs) are relatively larger than in life: in-plane semi-axes of
  ellipsoidal organs at least 1.2 voxels and their cranio-caudal semi-axis at least one slice (adrenals: 2 voxels
  wide, 1.2 thick, 1.5 slices high), tube radii at least 1 voxel (esophagus 1.3; intrahepatic vessels and the
  superior mesenteric artery 0.6-0.7), bone cortex at least 1 voxel, the muscle wall at least 1.5 voxels, the
  half-height of a rib at least 0.5 slice; every labelled organ holds at least :py:data:`MIN_ORGAN_VOXELS` voxels
  in every case (the anatomy is redrawn from the same random stream otherwise); adrenals have about 25-80 voxels
  (median ~40) at matrix 128 and 8-30 (median ~14) at matrix 48, the smallest matrix accepted;
* simplified anatomy: organs are smooth analytic shapes without lesions, no ligaments, crura, mesenteric vessels
  beyond the main trunks, lymph nodes, urinary bladder, sacrum or costal cartilages; bowel loops are a random
  arrangement, not a continuous small bowel, and there is no oral contrast; every patient is an adult lying
  supine with the arms out of the field of view; labels are exact (no annotator variability); the phases are
  balanced, unlike most real collections;
* simplified physics: no beam hardening, streaks, metal, photon starvation, motion, truncation or reconstruction
  kernels; noise is stationary Gaussian (correlated in-plane) rather than a reconstruction-dependent pattern; the
  partial-volume model is a Gaussian blur of the piecewise-constant tissue image, not an integration over the
  slice profile; contrast timing is an idealised phase (no bolus-timing variation beyond the HU ranges, no
  time-density curves, no mixing artefacts); HU of tissues not in ct_facts (heart, medulla, gastric food, faeces,
  disc, CSF, calcification) are plausible round values;
* on disk: only NIfTI (no DICOM series), square pixels, no oblique or transposed axes, no gantry tilt.

Files under ``output_dir``: ``imagesTr`` / ``labelsTr`` (training and validation), ``imagesTs`` / ``labelsTs``
(testing, with labels), ``imagesUn`` (the unlabelled pool), ``demo_params.json`` and ``dataset.json``. nibabel
writes the gzip streams with a zero modification time, so the same parameters give byte-identical files.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from monai_contrastive.data.cache import generated_dataset_cached
from monai_contrastive.data.ct_labels import CONTRAST_PHASES, FLARE22_ORGANS, flare22_channel_def
from monai_contrastive.io import atomic_path, atomic_write_json

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

REFERENCE_FOV_MM = 350.0
"""The anatomy is scaled by ``matrix * in-plane spacing / REFERENCE_FOV_MM`` (life-size at that field of view)."""
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
"""HU range per tissue class and contrast phase (``shared/notes/ct_facts.md``; heart, medulla, food, faeces, disc,
CSF and calcification are not in that table and are plausible values)."""

# bump whenever the image model changes, so that cached demo folders are regenerated
_GENERATOR_VERSION = 1
_DATALIST_NAME = "dataset.json"
_PARAMS_NAME = "demo_params.json"
_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "imagesUn")
_CASE_FILE_RE = re.compile(r"^CT[LU]\d{4,}\.nii\.gz$")
_TMP_FILE_RE = re.compile(r"^\.CT[LU]\d{4,}\.\d+\.tmp\.nii\.gz$")
_HU_MIN, _HU_MAX = -1024, 3071
_MAX_ATTEMPTS = 20

# tissues: name, HU class, label organ (None: background), low-frequency texture SD, mid-frequency texture SD (HU)
_TISSUE_TABLE: tuple[tuple[str, str, str | None, float, float], ...] = (
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
_T = {name: i for i, (name, *_) in enumerate(_TISSUE_TABLE)}
_LABEL_LUT = np.array(
    [0 if organ is None else FLARE22_ORGANS.index(organ) + 1 for _, _, organ, _, _ in _TISSUE_TABLE], dtype=np.uint8
)
# tissues organs and bowel may not overwrite: outside the cavity, muscle, skeleton
_PROTECTED = ("air", "fat_subcutaneous", "muscle", "cortical_bone", "trabecular_bone", "disc", "csf")
_FREE_LUT = np.ones(len(_TISSUE_TABLE), dtype=bool)
_FREE_LUT[[_T[n] for n in _PROTECTED]] = False


def generate_ct_demo(
    output_dir: str,
    num_labelled: int = 30,
    num_unlabelled: int = 30,
    seed: int = 0,
    matrix: int = 128,
    num_validation: int = 5,
    num_test: int = 5,
    num_workers: int = 0,
    overwrite: bool = False,
) -> str:
    """Write the synthetic multi-organ abdominal CT demo dataset and return the path of its datalist.

    Files written under ``output_dir`` (see the module docstring for the image model)::

        imagesTr/CTL0001.nii.gz, labelsTr/CTL0001.nii.gz, ...   training and validation cases
        imagesTs/CTL0029.nii.gz, labelsTs/CTL0029.nii.gz, ...   testing cases (labelled)
        imagesUn/CTU0001.nii.gz, ...                            the unlabelled pool
        demo_params.json, dataset.json (written last)

    ``dataset.json`` is a Decathlon-style datalist with paths relative to its folder, so
    ``monai.data.load_decathlon_datalist(path, data_list_key=key, base_dir=os.path.dirname(path))`` reads every
    list::

        {"name": ..., "description": ..., "reference": ..., "licence": ..., "tensorImageSize": "3D",
         "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", ...}, "phases": [...],
         "numTraining": ..., "numValidation": ..., "numTest": ..., "numUnlabelled": ...,
         "training": [{"image": "imagesTr/CTL0001.nii.gz", "label": "labelsTr/CTL0001.nii.gz",
                       "phase": "arterial", "case": "CTL0001", "spacing": [0.75, 0.75, 2.5]}, ...],
         "validation": [...], "testing": [...],
         "unlabelled": [{"image": "imagesUn/CTU0001.nii.gz", "phase": ..., "case": "CTU0001", "spacing": ...}]}

    The labelled cases ``CTL0001 ... CTL<num_labelled>`` are split in order: the first
    ``num_labelled - num_validation - num_test`` are ``training``, the next ``num_validation`` ``validation``, the
    last ``num_test`` ``testing``. ``spacing`` is the voxel size along the stored array axes (the affine's column
    norms). Case ``i`` of a pool depends only on ``seed``, ``matrix``, the pool and ``i`` (not on the counts), so a
    larger dataset extends a smaller one.

    Deterministic and cached: the same parameters give identical arrays and, as nibabel writes gzip with a zero
    modification time, byte-identical files. Generation is skipped when ``dataset.json`` exists,
    ``demo_params.json`` matches the parameters and every listed file exists, unless ``overwrite`` is set; on
    regeneration, case files not in the new dataset are removed. ``dataset.json`` is written last through a
    temporary file, so an interrupted generation is redone by the next call. The default set (60 volumes at
    matrix 128, 30 label maps) takes about 10 s in one process on a 2-core Xeon, ~160 ms per volume (see
    ``benchmarks/results/synthetic_ct_generation.md``).

    Args:
        output_dir: folder to write into (created if needed).
        num_labelled: number of labelled cases (training + validation + testing); at least
            ``num_validation + num_test + 1``.
        num_unlabelled: number of unlabelled cases (image only) for pretraining; may be 0.
        seed: non-negative integer seeding every case (``numpy.random.SeedSequence(seed, spawn_key=...)``).
        matrix: in-plane matrix size (48-512; below 48 small organs get too few voxels); the anatomy is scaled to
            the field of view ``matrix * spacing``.
        num_validation: number of labelled cases in ``validation``.
        num_test: number of labelled cases in ``testing``.
        num_workers: worker processes generating cases in parallel; 0 or 1 generates in this process. Does not
            change the output.
        overwrite: regenerate even when a matching cached dataset exists.

    Returns:
        The path of ``<output_dir>/dataset.json``.

    Raises:
        ValueError: when an argument is out of range or of the wrong type.
        TypeError: when ``output_dir`` is not a path.
    """
    counts = _check_params(num_labelled, num_unlabelled, seed, matrix, num_validation, num_test, num_workers)
    num_labelled, num_unlabelled, seed, matrix, num_validation, num_test, num_workers = counts
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"output_dir must be a path (str or os.PathLike), got {type(output_dir).__name__}.")
    output_dir = os.path.abspath(os.path.expanduser(os.fspath(output_dir)))
    datalist_path = os.path.join(output_dir, _DATALIST_NAME)
    params_path = os.path.join(output_dir, _PARAMS_NAME)
    params = {
        "generator": "multiorgan_ct",
        "version": _GENERATOR_VERSION,
        "num_labelled": num_labelled,
        "num_unlabelled": num_unlabelled,
        "seed": seed,
        "matrix": matrix,
        "num_validation": num_validation,
        "num_test": num_test,
    }
    lists = ("training", "validation", "testing", "unlabelled")
    if not overwrite and generated_dataset_cached(output_dir, datalist_path, params_path, params, lists):
        return datalist_path

    for folder in _FOLDERS:
        os.makedirs(os.path.join(output_dir, folder), exist_ok=True)
    # removed first so that a generation killed half-way is never mistaken for a complete one
    if os.path.exists(datalist_path):
        os.remove(datalist_path)

    num_train = num_labelled - num_validation - num_test
    width = max(4, len(str(max(num_labelled, num_unlabelled, 1))))
    tasks = []
    for index in range(num_labelled):
        split = "training" if index < num_train else "validation" if index < num_train + num_validation else "testing"
        suffix = "Ts" if split == "testing" else "Tr"
        tasks.append((split, 0, index, f"CTL{index + 1:0{width}d}", f"images{suffix}", f"labels{suffix}"))
    for index in range(num_unlabelled):
        tasks.append(("unlabelled", 1, index, f"CTU{index + 1:0{width}d}", "imagesUn", None))
    jobs = [
        (output_dir, seed, matrix, pool, index, case, image_dir, label_dir)
        for _, pool, index, case, image_dir, label_dir in tasks
    ]
    if num_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(num_workers, len(jobs))) as executor:
            items = list(executor.map(_make_case, jobs))
    else:
        items = [_make_case(job) for job in jobs]
    _remove_stale_files(output_dir, {p for it in items for k, p in it.items() if k in ("image", "label")})

    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "testing": [], "unlabelled": []}
    for (split, *_), item in zip(tasks, items):
        lists[split].append(item)
    datalist = {
        "name": "multiorgan_ct_demo",
        "description": (
            "Synthetic contrast-enhanced abdominal CT with the 13 FLARE22 organ labels and a contrast phase per case, "
            "generated by monai_contrastive.data.synthetic_ct.generate_ct_demo for demos and tests; not real patients."
        ),
        "reference": "FLARE22 label set (Ma et al., MICCAI FLARE 2022); HU by phase from radiology practice",
        "licence": "CC0-1.0 (synthetic)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": flare22_channel_def(),
        "phases": list(CONTRAST_PHASES),
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["testing"]),
        "numUnlabelled": len(lists["unlabelled"]),
        **lists,
    }
    atomic_write_json(params, params_path, indent=1)
    atomic_write_json(datalist, datalist_path, indent=1)
    return datalist_path


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}.")
    return int(value)


def _check_params(
    num_labelled: Any,
    num_unlabelled: Any,
    seed: Any,
    matrix: Any,
    num_validation: Any,
    num_test: Any,
    num_workers: Any,
) -> tuple[int, int, int, int, int, int, int]:
    num_validation = _check_int("num_validation", num_validation, 0)
    num_test = _check_int("num_test", num_test, 0)
    num_labelled = _check_int("num_labelled", num_labelled, 1)
    if num_labelled < num_validation + num_test + 1:
        raise ValueError(
            f"num_labelled ({num_labelled}) must exceed num_validation + num_test ({num_validation} + {num_test}) "
            "so that at least one case is left for training."
        )
    num_unlabelled = _check_int("num_unlabelled", num_unlabelled, 0)
    seed = _check_int("seed", seed, 0)
    matrix = _check_int("matrix", matrix, 48, 512)
    num_workers = _check_int("num_workers", num_workers, 0)
    return num_labelled, num_unlabelled, seed, matrix, num_validation, num_test, num_workers


def _remove_stale_files(output_dir: str, keep: set[str]) -> None:
    """Delete case files of an earlier generation that the new dataset lacks, and old temporary files."""
    for folder in _FOLDERS:
        directory = os.path.join(output_dir, folder)
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            # another process (a second DDP rank) may be cleaning or writing the same cache concurrently
            with contextlib.suppress(FileNotFoundError):
                if _CASE_FILE_RE.match(name) and f"{folder}/{name}" not in keep:
                    os.remove(path)
                elif _TMP_FILE_RE.match(name) and time.time() - os.path.getmtime(path) > 3600.0:
                    os.remove(path)  # left by a killed generation (recent ones may be being written now)


def _case_phase(seed: int, pool: int, index: int) -> str:
    """Balanced phases: each block of 4 consecutive cases of a pool is a random permutation of the 4 phases."""
    block_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2 + pool, index // 4)))
    return CONTRAST_PHASES[int(block_rng.permutation(len(CONTRAST_PHASES))[index % len(CONTRAST_PHASES)])]


def _make_case(job: tuple) -> dict[str, Any]:
    """Render and write one case; returns its datalist item (paths relative to ``output_dir``)."""
    output_dir, seed, matrix, pool, index, case, image_dir, label_dir = job
    phase = _case_phase(seed, pool, index)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(pool, index)))
    volume = render_case(rng, matrix, phase, require_organs=label_dir is not None)
    image_rel = f"{image_dir}/{case}.nii.gz"
    _write_nifti(os.path.join(output_dir, image_rel), volume["image"], volume["affine"], volume["offset_storage"])
    item: dict[str, Any] = {"image": image_rel}
    if label_dir is not None:
        label_rel = f"{label_dir}/{case}.nii.gz"
        _write_nifti(os.path.join(output_dir, label_rel), volume["label"], volume["affine"], False)
        item["label"] = label_rel
    item.update(phase=phase, case=case, spacing=[float(s) for s in volume["spacing"]])
    return item


def _write_nifti(path: str, array: np.ndarray, affine: np.ndarray, offset_storage: bool) -> None:
    """Write int16 HU (optionally stored as HU + 1024 with scl_slope 1 / scl_inter -1024) or a uint8 label map."""
    if array.dtype == np.uint8:
        stored, slope, inter = array, 1.0, 0.0
    elif offset_storage:
        stored, slope, inter = (array.astype(np.int16) + np.int16(1024)).astype(np.int16), 1.0, -1024.0
    else:
        stored, slope, inter = array.astype(np.int16), 1.0, 0.0
    image = nib.Nifti1Image(stored, affine)
    header = image.header
    header.set_data_dtype(stored.dtype)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"monai_contrastive synthetic CT demo"
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header.set_slope_inter(slope, inter)
    directory, name = os.path.split(path)
    # via a temporary file: another process (e.g. a second DDP rank) may be reading the same cache; the name is fixed
    # (not random) because gzip stores it in the file, which must be the same for the same seed
    tmp = os.path.join(directory, f".{name[: -len('.nii.gz')]}.{os.getpid()}.tmp.nii.gz")
    with atomic_path(path, tmp_path=tmp) as tmp:
        nib.save(image, tmp)


# ---------------------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------------------


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
    sxy = int(rng.integers(308, 460 + 1)) / 512.0
    sz = int(rng.integers(6, 20 + 1)) * 0.25
    orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    offset_storage = bool(rng.random() < 0.5)
    noise_sd = float(np.clip(rng.uniform(10.0, 22.0) * math.sqrt(3.0 / sz), *NOISE_SD_RANGE))
    hu = _draw_hu(rng, phase)
    for _ in range(_MAX_ATTEMPTS):
        phantom = _Phantom(rng, matrix, sxy, sz)
        tissue = phantom.render()
        label = _LABEL_LUT[tissue]
        counts = np.bincount(label.ravel(), minlength=len(FLARE22_ORGANS) + 1)
        if not require_organs or counts[1:].min() >= MIN_ORGAN_VOXELS:
            break
    else:  # pragma: no cover - the layout keeps every organ well above the minimum
        raise RuntimeError(f"Could not place every organ with >= {MIN_ORGAN_VOXELS} voxels in {_MAX_ATTEMPTS} draws.")
    image = _intensities(rng, tissue, phantom, hu, phase, noise_sd)
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
        "spacing": np.array([sxy, sxy, sz]),
        "orientation": orientation,
        "offset_storage": offset_storage,
    }


def _draw_hu(rng: np.random.Generator, phase: str) -> dict[str, float]:
    hu = {name: float(rng.uniform(*ranges[phase])) for name, ranges in HU_RANGES.items()}
    # portal-venous / delayed nephrogram: medulla close to the cortex (homogeneous), not independent of it
    if phase == "portal_venous":
        hu["kidney_medulla"] = hu["kidney_cortex"] - float(rng.uniform(0.0, 12.0))
    elif phase == "delayed":
        hu["kidney_medulla"] = hu["kidney_cortex"] + float(rng.uniform(0.0, 12.0))
    return hu


def _intensities(
    rng: np.random.Generator, tissue: np.ndarray, phantom: _Phantom, hu: dict[str, float], phase: str, noise_sd: float
) -> np.ndarray:
    """Mean HU per tissue + texture, partial-volume blur, correlated noise; int16 HU."""
    hu_lut = np.array([hu[cls] for _, cls, _, _, _ in _TISSUE_TABLE], dtype=np.float32)
    lo_lut = np.array([t[3] for t in _TISSUE_TABLE], dtype=np.float32)
    mid_lut = np.array([t[4] for t in _TISSUE_TABLE], dtype=np.float32)
    if phase == "arterial":  # arterial spleen: mottled (zebra) enhancement
        lo_lut[_T["spleen"]], mid_lut[_T["spleen"]] = 10.0, 22.0
    if phase == "delayed":
        lo_lut[[_T["right_kidney_pelvis"], _T["left_kidney_pelvis"]]] = 40.0
    image = hu_lut[tissue]
    image += lo_lut[tissue] * phantom.field_lo
    image += mid_lut[tissue] * phantom.field_mid
    # partial volume: blur over about one voxel (in millimetres the slice profile is the wider one)
    image = gaussian_filter(image, sigma=(0.55, 0.55, 0.45), mode="nearest", truncate=3.0)
    # CT noise: white noise correlated in-plane by the reconstruction kernel, scaled to the case's SD
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    kernel = float(rng.uniform(0.5, 0.8))
    noise = gaussian_filter(noise, sigma=(kernel, kernel, 0.0), mode="wrap", truncate=3.0)
    noise *= noise_sd / float(noise.std())
    image += noise
    return np.clip(np.rint(image), _HU_MIN, _HU_MAX).astype(np.int16)


def _rotation(ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` (radians); its columns are the local axes in patient coordinates."""
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _frame(axis_z: np.ndarray, toward_x: np.ndarray) -> np.ndarray:
    """Rotation whose third column is ``axis_z`` and whose first column is ``toward_x`` made orthogonal to it."""
    z = axis_z / np.linalg.norm(axis_z)
    x = toward_x - np.dot(toward_x, z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _catmull_rom(points: np.ndarray, radii: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample a Catmull-Rom spline through ``points`` (N, 3) about every ``step`` mm; radii interpolated linearly."""
    padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    samples, rads = [], []
    for i in range(len(points) - 1):
        p0, p1, p2, p3 = padded[i : i + 4]
        n = max(2, int(math.ceil(np.linalg.norm(p2 - p1) / step)))
        t = (np.arange(n) / n)[:, None]
        seg = 0.5 * (
            2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
        )
        samples.append(seg)
        rads.append(radii[i] + (radii[i + 1] - radii[i]) * t[:, 0])
    samples.append(points[-1:])
    rads.append(radii[-1:])
    return np.concatenate(samples), np.concatenate(rads)


class _Phantom:
    """One case's anatomy, drawn in life-size millimetres and rendered on its (miniature) canonical RAS grid.

    Patient frame: x to the patient's right, y anterior, z superior; origin at the body centre at the level of
    the renal hila. ``k`` scales the skeleton and organs, lengths below are for ``k = 1``.
    """

    def __init__(self, rng: np.random.Generator, matrix: int, sxy: float, sz: float) -> None:
        self.rng = rng
        self.sxy, self.sz = sxy, sz
        self.scale = matrix * sxy / REFERENCE_FOV_MM
        # smallest life-size lengths that stay about one voxel / one slice after scaling
        self.min_xy = sxy / self.scale
        self.min_z = sz / self.scale
        k = self.k = self.u(0.9, 1.05)
        self.cav_a, self.cav_b = 112.0 * k * self.u(0.95, 1.05), 84.0 * k * self.u(0.95, 1.05)
        self.wall = max(self.u(8.0, 14.0), 1.5 * self.min_xy)
        self.fat = self.u(8.0, 35.0)
        self.dome_r = 135.0 * k + self.j(6.0)
        self.dome_l = self.dome_r - self.u(5.0, 20.0)
        self.y_vb = -self.cav_b + self.u(58.0, 66.0) * k
        self.kidney_r = np.array([66.0 * k + self.j(4.0), -22.0 * k + self.j(3.0), -15.0 * k + self.j(6.0)])
        self.kidney_l = np.array([-66.0 * k + self.j(4.0), -22.0 * k + self.j(3.0), 0.0 * k + self.j(6.0)])
        self.kidney_len = 52.0 * k * self.u(0.9, 1.1)
        self.z_bif = -85.0 * k + self.j(8.0)
        self._setup_grid(matrix)

    # random helpers (python floats keep the float32 grids in float32)
    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def j(self, sd: float) -> float:
        return float(np.clip(self.rng.normal(0.0, sd), -2.0 * sd, 2.0 * sd))

    def _setup_grid(self, matrix: int) -> None:
        rng, s = self.rng, self.scale
        # cranio-caudal coverage: kidneys' lower poles to the right dome, plus random margins
        z_low = min(self.kidney_r[2], self.kidney_l[2]) - self.kidney_len - 10.0 * self.k
        z_high = self.dome_r + 25.0 * self.k
        span = (z_high - z_low) * s
        nz = max(int(math.ceil(span / self.sz)), max(8, int(round(0.16 * matrix))))
        extra = nz * self.sz / s - (z_high - z_low)
        below = extra * self.u(0.25, 0.75)
        self.z_first = z_low - below  # life-size z of the first (most inferior) slice
        self.z_last = self.z_first + (nz - 1) * self.sz / s
        self.shape = (matrix, matrix, nz)
        # world (RAS, mm): scanner-like origin; body centre near the FOV centre, slices at a table position
        fov = matrix * self.sxy
        origin_xy = -0.5 * (matrix - 1) * self.sxy + float(rng.integers(-320, 321)) / 64.0
        origin_z = float(rng.integers(-1600, -200)) / 4.0
        self.affine = np.diag([self.sxy, self.sxy, self.sz, 1.0])
        self.affine[:3, 3] = (origin_xy, origin_xy + float(rng.integers(-160, 161)) / 64.0, origin_z)
        centre = self.affine[:2, 3] + 0.5 * (matrix - 1) * self.sxy
        self.body_centre = centre + fov * np.array([self.u(-0.012, 0.012), self.u(-0.012, 0.012)])
        self.body_z0 = origin_z - s * self.z_first  # world z of life-size z = 0
        self.angle = math.radians(self.u(-4.0, 4.0))
        # life-size patient coordinates of every voxel: rotation in-plane, then a smooth displacement field
        u = ((self.affine[0, 3] + self.sxy * np.arange(matrix) - self.body_centre[0]) / s).astype(np.float32)
        v = ((self.affine[1, 3] + self.sxy * np.arange(matrix) - self.body_centre[1]) / s).astype(np.float32)
        w = ((origin_z + self.sz * np.arange(nz) - self.body_z0) / s).astype(np.float32)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        x0 = ca * u[:, None, None] + sa * v[None, :, None]
        y0 = -sa * u[:, None, None] + ca * v[None, :, None]
        z0 = w[None, None, :]
        coords = []
        self.dmax = 0.0  # bound of the displacement of any one coordinate
        for _ in range(3):
            d = np.zeros(self.shape, dtype=np.float32)
            bound = 0.0
            for _ in range(2):
                amp = self.u(1.0, 4.0)
                kvec = rng.normal(0.0, 1.0, 3)
                kvec *= 2.0 * math.pi / (np.linalg.norm(kvec) * self.u(150.0, 400.0))
                d += amp * np.sin(
                    float(kvec[0]) * x0 + float(kvec[1]) * y0 + float(kvec[2]) * z0 + self.u(0.0, 2.0 * math.pi)
                )
                bound += amp
            self.dmax = max(self.dmax, bound)
            coords.append(d)
        self.X = coords[0] + x0
        self.Y = coords[1] + y0
        self.Z = coords[2] + z0
        self.tissue = np.zeros(self.shape, dtype=np.uint8)
        # texture fields (unit SD): organ-scale (~8 mm life-size) and fine (~2.5 mm), at least ~1 voxel
        self.field_lo = self._field(8.0, 1.2)
        self.field_mid = self._field(2.5, 0.6)

    def _field(self, sigma_mm: float, min_voxels: float) -> np.ndarray:
        s = self.scale
        sig_xy = max(sigma_mm * s / self.sxy, min_voxels)
        sig_z = max(sigma_mm * s / self.sz, 0.3)
        field = self.rng.standard_normal(self.shape, dtype=np.float32)
        field = gaussian_filter(field, sigma=(sig_xy, sig_xy, sig_z), mode="wrap", truncate=3.0)
        field /= float(field.std()) + 1e-12
        return field

    # geometry helpers ------------------------------------------------------------------------------------------------

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose life-size coordinates may fall in the box ``[lo, hi]``."""
        d = self.dmax + 1.0
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        corners = np.array([(x, y) for x in (lo[0] - d, hi[0] + d) for y in (lo[1] - d, hi[1] + d)])
        u = ca * corners[:, 0] - sa * corners[:, 1]
        v = sa * corners[:, 0] + ca * corners[:, 1]
        s = self.scale
        i = (self.body_centre[0] + s * u - self.affine[0, 3]) / self.sxy
        jj = (self.body_centre[1] + s * v - self.affine[1, 3]) / self.sxy
        kz = (self.body_z0 + s * np.array([lo[2] - d, hi[2] + d]) - self.affine[2, 3]) / self.sz
        out = []
        for idx, n in zip((i, jj, kz), self.shape):
            a, b = max(int(math.floor(idx.min())), 0), min(int(math.ceil(idx.max())) + 1, n)
            if a >= b:
                return None
            out.append(slice(a, b))
        return tuple(out)  # type: ignore[return-value]

    def xyz(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.X[sl], self.Y[sl], self.Z[sl]

    def allowed(self, sl: tuple[slice, slice, slice], region: str = "abdomen") -> np.ndarray:
        """Voxels a structure may take: not protected and, for ``abdomen`` / ``thorax``, on that side of the dome."""
        ok = _FREE_LUT[self.tissue[sl]]
        if region == "abdomen":
            ok &= self.Z[sl] <= self.diaphragm[sl]
        elif region == "thorax":
            ok &= self.Z[sl] > self.diaphragm[sl]
        return ok

    def put(self, sl: tuple[slice, slice, slice], mask: np.ndarray, name: str) -> None:
        view = self.tissue[sl]
        view[mask] = _T[name]

    def wobble(self, n: int, amplitude: float) -> list[tuple[float, float, float, float, float]]:
        """Low-frequency surface perturbation terms ``(amp, wx, wy, wz, phase)`` in normalised coordinates."""
        terms = []
        for _ in range(n):
            direction = self.rng.normal(0.0, 1.0, 3)
            direction *= self.u(1.0, 2.5) / np.linalg.norm(direction)
            terms.append((self.u(0.3, 1.0) * amplitude, *map(float, direction), self.u(0.0, 2.0 * math.pi)))
        return terms

    def ellipsoid(
        self,
        centre: Sequence[float],
        axes: Sequence[float],
        rotation: np.ndarray | None = None,
        wobble: list | None = None,
        clamp: bool = True,
        min_size: tuple[float, float, float] = (1.2, 1.2, 1.0),
    ) -> tuple[tuple[slice, slice, slice] | None, np.ndarray | None, list[np.ndarray] | None]:
        """Normalised radius (< 1 inside) of a rotated, wobbled ellipsoid on its bounding box, and local coordinates.

        With ``clamp``, the first two axes (in-plane for small tilts) are at least ``min_size[:2]`` voxels and
        the third (cranio-caudal) at least ``min_size[2]`` slices.
        """
        a = np.array(axes, dtype=float)
        if clamp:
            a[:2] = np.maximum(a[:2], np.array(min_size[:2]) * self.min_xy)
            a[2] = max(a[2], min_size[2] * self.min_z)
        rot = np.eye(3) if rotation is None else rotation
        extent = np.abs(rot) @ a * 1.3
        c = np.asarray(centre, dtype=float)
        sl = self.box(c - extent, c + extent)
        if sl is None:
            return None, None, None
        X, Y, Z = self.xyz(sl)
        dx, dy, dz = X - float(c[0]), Y - float(c[1]), Z - float(c[2])
        q = [(float(rot[0, i]) * dx + float(rot[1, i]) * dy + float(rot[2, i]) * dz) / float(a[i]) for i in range(3)]
        r = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
        if wobble:
            pert = 1.0
            for amp, wx, wy, wz, ph in wobble:
                pert = pert + amp * np.sin(wx * q[0] + wy * q[1] + wz * q[2] + ph)
            r = r / pert
        return sl, r, q

    def tube(
        self, points: Sequence[Sequence[float]], radii: Sequence[float], min_radius: float = 1.0
    ) -> Iterator[tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(slices, depth, centre, radius)`` per piece of a tube swept along a Catmull-Rom centre line.

        ``depth`` is the radius minus the distance to the nearest centre-line sample (positive inside, life-size
        mm); ``centre`` (3, ...) and ``radius`` are that sample's. Each voxel is reported by exactly one piece.
        """
        pts = np.asarray(points, dtype=float)
        rad = np.maximum(np.asarray(radii, dtype=float), min_radius * self.min_xy)
        samples, srad = _catmull_rom(pts, rad, step=0.4 * float(rad.min()))
        piece, halo = 8, 3
        for start in range(0, len(samples), piece):
            stop = min(start + piece, len(samples))
            own = samples[start:stop]
            reach = float(srad[start:stop].max())
            sl = self.box(own.min(0) - reach, own.max(0) + reach)
            if sl is None:
                continue
            a, b = max(start - halo, 0), min(stop + halo, len(samples))
            X, Y, Z = self.xyz(sl)
            best = np.full(X.shape, np.inf, dtype=np.float32)
            arg = np.zeros(X.shape, dtype=np.int32)
            for n in range(a, b):
                px, py, pz = (float(v) for v in samples[n])
                dist = np.sqrt((X - px) ** 2 + (Y - py) ** 2 + (Z - pz) ** 2) - float(srad[n])
                closer = dist < best
                best = np.where(closer, dist, best)
                arg[closer] = n
            mine = (arg >= start) & (arg < stop)
            depth = np.where(mine, -best, -np.inf).astype(np.float32)
            yield sl, depth, samples[arg].transpose(-1, *range(arg.ndim)), srad[arg]

    # anatomy ---------------------------------------------------------------------------------------------------------

    def render(self) -> np.ndarray:
        """Paint every structure (later ones win where allowed) and return the canonical tissue-id volume."""
        self._body()
        self._thorax()
        self._ribs()
        self._spine_and_muscles()
        self._pelvis()
        self._bowel()
        self._vessels()
        self._organs()
        return self.tissue

    def _radial(self, a: np.ndarray | float, b: np.ndarray | float, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Normalised radius of an ellipse-like outline, flattened posteriorly (superellipse, exponent 2.6)."""
        xa, yb = np.abs(X / a), np.abs(Y / b)
        anterior = np.sqrt(xa * xa + yb * yb)
        posterior = (xa**2.6 + yb**2.6) ** (1.0 / 2.6)
        return np.where(Y >= 0, anterior, posterior)

    def _body(self) -> None:
        X, Y, Z = self.X, self.Y, self.Z
        theta = np.arctan2(Y, X)
        harmonics = 1.0
        for order in (2, 3, 4):
            harmonics = harmonics + self.u(-0.02, 0.02) * np.cos(order * theta + self.u(0.0, 2 * math.pi))
        zf = 1.0 + self.u(0.02, 0.06) * np.sin(2 * math.pi * Z / self.u(250.0, 450.0) + self.u(0.0, 2 * math.pi))
        ca, cb = self.cav_a * zf * harmonics, self.cav_b * zf * harmonics
        fat = self.fat * (1.0 + self.u(0.1, 0.4) * np.cos(theta - self.u(0.0, 2 * math.pi)))
        self.rho_cavity = self._radial(ca, cb, X, Y)
        self.rho_wall = self._radial(ca + self.wall, cb + self.wall, X, Y)
        rho_skin = self._radial(ca + self.wall + fat, cb + self.wall + 0.8 * fat, X, Y)
        t = self.tissue
        t[rho_skin < 1.0] = _T["fat_subcutaneous"]
        t[self.rho_wall < 1.0] = _T["muscle"]
        t[self.rho_cavity < 1.0] = _T["fat_visceral"]
        # diaphragm: two paraboloid domes, the right higher
        curvature = 2.0 * 120.0 * self.k
        dome_r = self.dome_r - ((X - 55.0 * self.k) ** 2 + (Y + 5.0) ** 2) / curvature
        dome_l = self.dome_l - ((X + 55.0 * self.k) ** 2 + (Y + 5.0) ** 2) / curvature
        self.diaphragm = np.maximum(dome_r, dome_l)

    def _thorax(self) -> None:
        k = self.k
        cavity = self.rho_cavity < 1.0
        thickness = max(4.0 * k, 0.5 * self.min_z)
        above = self.Z - self.diaphragm
        self.tissue[cavity & (above > 0) & (above <= thickness)] = _T["diaphragm"]
        self.tissue[cavity & (above > thickness)] = _T["lung"]
        # mediastinal fat column and the heart resting on the domes
        top = self.z_last + 20.0
        sl, r, _ = self.ellipsoid((-8.0 * k, self.y_vb + 26.0 * k, top), (30.0 * k, 24.0 * k, 1e4), clamp=False)
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl, "thorax"), "fat_visceral")
        centre = (-12.0 * k + self.j(5.0), 35.0 * k + self.j(5.0), min(self.dome_r, self.dome_l) + 50.0 * k)
        sl, r, _ = self.ellipsoid(centre, (62.0 * k, 50.0 * k, 60.0 * k), _rotation(az=self.j(0.15)))
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl, "thorax"), "heart")

    def _ribs(self) -> None:
        """Ribs in the lower chest wall: descending anteriorly, the lowest two short (floating)."""
        k = self.k
        # rib 12 leaves the spine at about T12, each rib above one vertebra higher; all descend anteriorly
        z_lowest = 55.0 * k + self.j(5.0)
        spacing = self.u(32.0, 38.0) * k
        drop = self.u(120.0, 160.0) * k
        num = 10
        z_low = z_lowest - drop
        if z_low > self.z_last:
            return
        kz0 = max(int((self.body_z0 + self.scale * (z_low - self.dmax) - self.affine[2, 3]) / self.sz), 0)
        sl = (slice(None), slice(None), slice(kz0, None))
        ring = (self.rho_wall[sl] < 1.0) & (self.rho_cavity[sl] >= 0.92)
        X, Y, Z = self.X[sl][ring], self.Y[sl][ring], self.Z[sl][ring]
        rho = self.rho_cavity[sl][ring]
        radial = np.hypot(X, Y) * (1.0 - 1.0 / rho)  # distance outside the cavity outline along the ray
        phi = np.abs(np.arctan2(X, -Y))  # 0 at the back, pi at the front
        half_r = max(0.45 * self.wall, 0.6 * self.min_xy)
        half_z = max(6.0 * k, 0.5 * self.min_z)
        bone = np.zeros(X.shape, dtype=np.float32)
        for i in range(num):
            z0 = z_lowest + i * spacing + self.j(2.0)
            end = (0.45 if i == 0 else 0.6 if i == 1 else 0.82) * math.pi + self.j(0.08)
            zc = z0 - drop * (phi / math.pi) ** 1.3
            d = np.sqrt(((radial - 0.5 * self.wall) / half_r) ** 2 + ((Z - zc) / half_z) ** 2)
            inside = (phi > 0.3) & (phi < end)
            bone = np.maximum(bone, np.where(inside, 2.0 - d, 0.0))
        ids = np.where(bone > 1.45, _T["trabecular_bone"], np.where(bone > 1.0, _T["cortical_bone"], 255))
        view = self.tissue[sl]
        current = view[ring]
        view[ring] = np.where(ids == 255, current, ids).astype(np.uint8)

    def _spine_and_muscles(self) -> None:
        k = self.k
        top, bottom = self.z_last + 20.0, self.z_first - 20.0
        # paraspinal muscles
        for side in (-1.0, 1.0):
            centre = (side * 30.0 * k, -self.cav_b + 26.0 * k, 0.5 * (top + bottom))
            sl, r, _ = self.ellipsoid(centre, (24.0 * k, 22.0 * k, 1e4), clamp=False)
            if sl is not None:
                self.put(sl, (r < 1.0) & (self.rho_cavity[sl] < 1.0), "muscle")
        # psoas: grows caudally from about the renal hila
        a_vb, b_vb = 21.0 * k, 16.0 * k
        z_psoas = 10.0 * k + self.j(5.0)
        r_psoas = 20.0 * k * self.u(0.85, 1.15)
        sl = self.box(
            (-a_vb - 2 * r_psoas, self.y_vb - 2 * r_psoas, bottom), (a_vb + 2 * r_psoas, self.y_vb + r_psoas, z_psoas)
        )
        if sl is not None:
            X, Y, Z = self.xyz(sl)
            radius = r_psoas * np.clip((z_psoas - Z) / (120.0 * k), 0.0, 1.0) ** 0.6
            radius = np.where(radius > 0, np.maximum(radius, self.min_xy), 0.0)
            for side in (-1.0, 1.0):
                cx = side * (a_vb + 0.8 * radius)
                inside = (X - cx) ** 2 + (Y - (self.y_vb - 2.0 * k)) ** 2 < radius**2
                self.put(sl, inside, "muscle")
        # vertebral column: bodies (cortical shell, trabecular core), discs, canal, lamina, processes
        cortex = max(2.0 * k, self.min_xy)
        period, disc = 36.0 * k, 9.0 * k
        offset = self.u(0.0, period)
        y_canal = self.y_vb - b_vb - 10.0 * k
        r_canal = max(8.0 * k, self.min_xy)
        lamina = max(6.0 * k, self.min_xy)
        sl = self.box((-60.0 * k, -self.cav_b - 5.0, bottom), (60.0 * k, self.y_vb + b_vb + 5.0, top))
        if sl is None:
            return
        X, Y, Z = self.xyz(sl)
        level = np.mod(Z - offset, period)
        is_disc = level < disc
        endplate = (level < disc + 0.5 * cortex) | (level > period - 0.5 * cortex)
        r_body = np.sqrt((X / a_vb) ** 2 + ((Y - self.y_vb) / b_vb) ** 2)
        vb = r_body < 1.0
        shell = r_body > 1.0 - cortex / b_vb
        self.put(sl, vb & ~is_disc & ~shell & ~endplate, "trabecular_bone")
        self.put(sl, vb & ~is_disc & (shell | endplate), "cortical_bone")
        self.put(sl, vb & is_disc, "disc")
        d_canal = np.sqrt(X * X + (Y - y_canal) ** 2)
        arch = ~is_disc & (d_canal >= r_canal) & (d_canal < r_canal + lamina) & (Y < y_canal + 0.5 * r_canal)
        spinous = np.sqrt(
            (X / max(4.0 * k, self.min_xy)) ** 2 + ((Y - (y_canal - r_canal - 14.0 * k)) / (16.0 * k)) ** 2
        )
        transverse = np.sqrt(
            ((np.abs(X) - 30.0 * k) / (16.0 * k)) ** 2 + ((Y - y_canal - 3.0 * k) / max(5.0 * k, self.min_xy)) ** 2
        )
        lumbar = Z < self.dome_r - 60.0 * k
        self.put(sl, arch | (~is_disc & (spinous < 1.0)) | (~is_disc & lumbar & (transverse < 1.0)), "cortical_bone")
        self.put(sl, d_canal < r_canal, "csf")

    def _pelvis(self) -> None:
        """Iliac wings below the crest (near the aortic bifurcation): curved plates posterolaterally."""
        k = self.k
        z_crest = self.z_bif - self.u(0.0, 15.0) * k
        if z_crest < self.z_first:
            return
        half = max(5.0 * k, 0.8 * self.min_xy)
        for side in (-1.0, 1.0):
            cx, cy = side * 55.0 * k, -25.0 * k
            sl = self.box((cx - 70.0 * k, cy - 60.0 * k, self.z_first - 20.0), (cx + 70.0 * k, cy + 60.0 * k, z_crest))
            if sl is None:
                continue
            X, Y, Z = self.xyz(sl)
            dx, dy = X - cx, Y - cy
            rho = np.sqrt((dx / (50.0 * k)) ** 2 + (dy / (40.0 * k)) ** 2) + 1e-6
            radial = np.hypot(dx, dy) * (1.0 - 1.0 / rho)
            alpha = np.arctan2(dy, side * dx)
            wing = (np.abs(radial) < half) & (alpha > -1.7) & (alpha < 0.5) & (Z < z_crest)
            wing &= self.rho_cavity[sl] < 1.0
            self.put(sl, wing & (np.abs(radial) >= 0.5 * half), "cortical_bone")
            self.put(sl, wing & (np.abs(radial) < 0.5 * half), "trabecular_bone")

    def _hollow(
        self, sl: tuple, depth: np.ndarray, wall: float, lumen: Callable[[np.ndarray], np.ndarray], names: tuple
    ) -> None:
        """Paint a hollow organ: ``names[0]`` where ``0 < depth <= wall``, else ``lumen(mask) -> tissue ids``."""
        ok = self.allowed(sl) & (depth > 0)
        self.put(sl, ok & (depth <= wall), names[0])
        inner = ok & (depth > wall)
        view = self.tissue[sl]
        view[inner] = lumen(inner)

    def _bowel(self) -> None:
        k, rng = self.k, self.rng
        wall = max(2.5 * k, 0.6 * self.min_xy)
        z_low = self.z_first - 20.0
        # small-bowel loops: fluid, gas or both (gas anterior, the non-dependent side of a supine patient)
        for _ in range(int(rng.integers(8, 17))):
            centre = (self.u(-65.0, 65.0) * k, self.u(0.0, 60.0) * k, self.u(self.z_bif - 40.0 * k, 15.0 * k))
            axes = (self.u(10.0, 14.0) * k, self.u(10.0, 14.0) * k, self.u(15.0, 30.0) * k)
            rot = _rotation(self.u(0, math.pi), self.u(0, math.pi), self.u(0, math.pi))
            sl, r, _ = self.ellipsoid(centre, axes, rot, self.wobble(2, 0.08))
            if sl is None:
                continue
            kind = rng.choice(3, p=(0.6, 0.15, 0.25))
            level = centre[1] + self.u(0.0, 0.7) * axes[1]
            depth = (1.0 - r) * min(axes)
            Y = self.Y[sl]
            fluid, gas = _T["bowel_fluid"], _T["gas"]

            def loop_lumen(mask: np.ndarray, kind: int = kind, level: float = level, Y: np.ndarray = Y) -> np.ndarray:
                if kind == 0:
                    return np.full(int(mask.sum()), fluid, dtype=np.uint8)
                if kind == 1:
                    return np.full(int(mask.sum()), gas, dtype=np.uint8)
                return np.where(Y[mask] > level, gas, fluid).astype(np.uint8)

            self._hollow(sl, depth, wall, loop_lumen, ("bowel_wall",))
        # colon frame: ascending, hepatic flexure, transverse, splenic flexure, descending; faeces with gas
        path = [
            (88.0, -5.0, z_low / k),
            (86.0, 0.0, -10.0),
            (75.0, 35.0, 5.0),
            (35.0, 62.0, -5.0),
            (-30.0, 62.0, 0.0),
            (-80.0, 25.0, 40.0),
            (-88.0, -10.0, 0.0),
            (-85.0, -5.0, z_low / k),
        ]
        points = [(x * k + self.j(4.0), y * k + self.j(4.0), z * k + self.j(4.0)) for x, y, z in path]
        radii = [self.u(17.0, 24.0) * k for _ in points]
        gas_level = self.u(-0.3, 0.6)
        for sl, depth, centre, radius in self.tube(points, radii):
            Y = self.Y[sl]
            pocket = self.field_mid[sl] > 1.2
            anterior = Y - centre[1] > gas_level * radius

            def colon_lumen(
                mask: np.ndarray, pocket: np.ndarray = pocket, anterior: np.ndarray = anterior
            ) -> np.ndarray:
                return np.where(pocket[mask] | anterior[mask], _T["gas"], _T["faeces"]).astype(np.uint8)

            self._hollow(sl, depth, wall, colon_lumen, ("bowel_wall",))

    def _paint_tube(
        self,
        points: list,
        radii: list,
        name: str,
        region: str = "abdomen",
        only: str | None = None,
        min_radius: float = 1.0,
    ) -> None:
        for sl, depth, _, _ in self.tube(points, radii, min_radius):
            mask = depth > 0
            mask &= (self.tissue[sl] == _T[only]) if only else self.allowed(sl, region)
            self.put(sl, mask, name)

    def _vessels(self) -> None:
        """Unlabelled vessels outside the organs (painted before them, so the organs win where they touch)."""
        k, j = self.k, self.j
        conf = (10.0 * k + j(3.0), 20.0 * k + j(3.0), 15.0 * k + j(4.0))  # portal confluence behind the pancreatic neck
        self.portal = [conf, (35.0 * k, 15.0 * k, 45.0 * k), (75.0 * k, 5.0 * k, 55.0 * k)]
        self.conf = conf
        self._paint_tube(self.portal, [7.0 * k, 7.0 * k, 5.0 * k], "portal_vein", "any")
        splenic = [
            conf,
            (-25.0 * k, 19.0 * k, 25.0 * k),
            (-58.0 * k, -3.0 * k, 35.0 * k),
            (-72.0 * k, -22.0 * k, 50.0 * k),
        ]
        self._paint_tube(splenic, [5.0 * k] * 4, "portal_vein")
        smv = [conf, (12.0 * k, 36.0 * k, -20.0 * k), (14.0 * k, 40.0 * k, -80.0 * k), (15.0 * k, 42.0 * k, -160.0 * k)]
        self._paint_tube(smv, [5.0 * k, 5.0 * k, 4.0 * k, 4.0 * k], "portal_vein")
        sma = [(-10.0 * k, 10.0 * k, 22.0 * k), (-5.0 * k, 30.0 * k, 10.0 * k), (-2.0 * k, 40.0 * k, -25.0 * k)]
        sma.append((0.0, 44.0 * k, -160.0 * k))
        self._paint_tube(sma, [4.0 * k] * 4, "artery", min_radius=0.7)
        rk, lk = self.kidney_r, self.kidney_l
        self._paint_tube(
            [(rk[0] - 14.0 * k, rk[1] + 8.0 * k, rk[2] + 3.0), (26.0 * k, 0.0, rk[2] + 10.0)], [5.0 * k] * 2, "vein"
        )
        lrv = [
            (lk[0] + 18.0 * k, lk[1] + 10.0 * k, lk[2] + 2.0),
            (-22.0 * k, 18.0 * k, lk[2] + 5.0),
            (18.0 * k, 6.0 * k, lk[2] + 5.0),
        ]
        self._paint_tube(lrv, [5.0 * k] * 3, "vein")
        # iliac arteries and veins below the bifurcation / confluence
        z_conf = self.z_bif - 12.0 * k
        for side in (-1.0, 1.0):
            art = [
                (-8.0 * k, self.y_vb + 30.0 * k, self.z_bif),
                (side * 40.0 * k, self.y_vb + 22.0 * k, self.z_bif - 60.0 * k),
            ]
            art.append((side * 60.0 * k, self.y_vb + 32.0 * k, self.z_bif - 140.0 * k))
            self._paint_tube(art, [6.0 * k] * 3, "artery")
            vein = [
                (22.0 * k, self.y_vb + 24.0 * k, z_conf),
                (side * 38.0 * k, self.y_vb + 14.0 * k, z_conf - 60.0 * k),
            ]
            vein.append((side * 56.0 * k, self.y_vb + 24.0 * k, z_conf - 140.0 * k))
            self._paint_tube(vein, [7.0 * k] * 3, "vein")

    def _kidney(self, centre: np.ndarray, side: float, prefix: str) -> None:
        """Kidney with cortex, medulla (pyramids), sinus fat and collecting system; the hilum faces anteromedially."""
        k = self.k
        axes = (26.0 * k * self.u(0.9, 1.1), 21.0 * k * self.u(0.9, 1.1), self.kidney_len)
        # local z: the long axis, upper pole medial and posterior; local x: the hilum, facing anteromedially
        coronal, sagittal = math.radians(self.u(8.0, 18.0)), math.radians(self.u(10.0, 20.0))
        hilum = math.radians(self.u(20.0, 35.0))
        long_axis = np.array([-side * math.tan(coronal), -math.tan(sagittal), 1.0])
        rot = _frame(long_axis, np.array([-side * math.cos(hilum), math.sin(hilum), 0.0]))
        sl, r, q = self.ellipsoid(centre, axes, rot, self.wobble(2, 0.05))
        if sl is None:
            return
        ok = self.allowed(sl) & (r < 1.0)
        # sinus: an inner ellipsoid displaced towards the hilum (local +x points medially after the rotation)
        r_sinus = np.sqrt(((q[0] - 0.55) / 0.6) ** 2 + (q[1] / 0.35) ** 2 + (q[2] / 0.6) ** 2)
        pelvis = r_sinus < 0.55
        sinus = r_sinus < 1.0
        psi = np.arctan2(q[1], q[0])
        medulla = r < 0.78 - 0.1 * (1.0 + np.cos(6.0 * psi + 3.0 * q[2]))
        self.put(sl, ok, f"{prefix}_cortex")
        self.put(sl, ok & medulla, f"{prefix}_medulla")
        self.put(sl, ok & sinus, "sinus_fat")
        self.put(sl, ok & pelvis, f"{prefix}_pelvis")

    def _organs(self) -> None:
        k, j, u = self.k, self.j, self.u
        # liver: right lobe + left lobe under the domes, above a sloping inferior surface
        right = (58.0 * k + j(5.0), 5.0 * k + j(5.0), self.dome_r - 75.0 * k)
        right_axes = (70.0 * k * u(0.9, 1.1), 75.0 * k * u(0.9, 1.1), 80.0 * k * u(0.9, 1.1))
        left = (-10.0 * k + j(5.0), 50.0 * k + j(4.0), self.dome_r - 45.0 * k)
        left_axes = (55.0 * k * u(0.85, 1.15), 28.0 * k * u(0.9, 1.1), 36.0 * k * u(0.9, 1.1))
        z_inf, slope = self.dome_r - 160.0 * k + j(6.0), u(0.5, 0.8)
        for centre, axes, wob in ((right, right_axes, 0.06), (left, left_axes, 0.08)):
            sl, r, _ = self.ellipsoid(centre, axes, _rotation(az=j(0.1)), self.wobble(3, wob))
            if sl is not None:
                X, Z = self.X[sl], self.Z[sl]
                self.put(sl, (r < 1.0) & (Z > z_inf + slope * (100.0 * k - X)) & self.allowed(sl), "liver")
        # intrahepatic vessels: portal branches and hepatic veins (liver label, venous enhancement)
        porta = self.portal[1]
        branches = [
            ([porta, (75.0 * k, 5.0 * k, 55.0 * k), (95.0 * k, -15.0 * k, 70.0 * k)], [5.0 * k, 4.0 * k, 3.0 * k]),
            ([porta, (10.0 * k, 35.0 * k, 65.0 * k), (-30.0 * k, 50.0 * k, 85.0 * k)], [4.5 * k, 3.5 * k, 3.0 * k]),
        ]
        ivc_top = (24.0 * k, -4.0 * k, self.dome_r - 30.0 * k)
        for end in (
            (90.0 * k, -15.0 * k, self.dome_r - 55.0 * k),
            (45.0 * k, 40.0 * k, self.dome_r - 50.0 * k),
            (-20.0 * k, 45.0 * k, self.dome_r - 40.0 * k),
        ):
            mid = tuple(0.5 * (a + b) + j(4.0) for a, b in zip(ivc_top, end))
            branches.append(([ivc_top, mid, end], [5.0 * k, 4.0 * k, 3.0 * k]))
        for i, (points, radii) in enumerate(branches):
            name = "liver_portal_vein" if i < 2 else "liver_hepatic_vein"
            self._paint_tube(points, radii, name, only="liver", min_radius=0.6)
        # gallbladder under the liver's inferior surface, fundus anterior-inferior
        gb = (55.0 * k + j(4.0), 42.0 * k + j(4.0), 5.0 * k + j(5.0))
        gb_axes = (15.0 * k * u(0.8, 1.2), 15.0 * k * u(0.8, 1.2), 38.0 * k * u(0.8, 1.2))
        sl, r, _ = self.ellipsoid(
            gb, gb_axes, _rotation(ax=math.radians(u(20.0, 45.0)), az=j(0.2)), self.wobble(2, 0.06)
        )
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl), "gallbladder")
        wall = max(4.0 * k, 0.8 * self.min_xy)
        # stomach: fundus under the left dome, body, antrum, pylorus; contents fluid or food, gas anteriorly
        path = [
            (-55.0, -5.0, self.dome_l / k - 25.0),
            (-55.0, 20.0, 70.0),
            (-38.0, 50.0, 45.0),
            (-5.0, 52.0, 28.0),
            (22.0, 40.0, 30.0),
        ]
        points = [(x * k + j(4.0), y * k + j(4.0), z * k + j(4.0)) for x, y, z in path]
        radii = [32.0 * k * u(0.85, 1.1), 28.0 * k * u(0.85, 1.1), 22.0 * k * u(0.85, 1.1), 16.0 * k, 11.0 * k]
        food = self.rng.random() < 0.4
        gas_level = u(0.1, 0.7)
        contents = _T["stomach_food"] if food else _T["stomach_fluid"]
        for sl, depth, centre, radius in self.tube(points, radii):
            anterior = self.Y[sl] - centre[1] > gas_level * radius

            def stomach_lumen(mask: np.ndarray, anterior: np.ndarray = anterior) -> np.ndarray:
                return np.where(anterior[mask], _T["stomach_gas"], contents).astype(np.uint8)

            self._hollow(sl, depth, wall, stomach_lumen, ("stomach_wall",))
        self.gej = (-30.0 * k + j(3.0), 12.0 * k + j(3.0), self.dome_l - 35.0 * k)
        # duodenum: bulb, descending, horizontal (between aorta and SMA), ascending to the DJ flexure
        path = [(22.0, 40.0, 30.0), (44.0, 28.0, 32.0), (52.0, 12.0, 22.0), (52.0, 8.0, -12.0), (30.0, 20.0, -28.0)]
        path += [(0.0, 26.0, -30.0), (-22.0, 22.0, -18.0), (-30.0, 26.0, 0.0)]
        points = [(x * k + j(3.0), y * k + j(3.0), z * k + j(3.0)) for x, y, z in path]
        radii = [u(10.0, 13.0) * k for _ in points]
        bubble = self.rng.random() < 0.5
        for sl, depth, centre, radius in self.tube(points, radii):
            anterior = (self.Y[sl] - centre[1] > 0.5 * radius) & bubble

            def duodenum_lumen(mask: np.ndarray, anterior: np.ndarray = anterior) -> np.ndarray:
                return np.where(anterior[mask], _T["duodenum_gas"], _T["duodenum_fluid"]).astype(np.uint8)

            self._hollow(sl, depth, max(2.5 * k, 0.6 * self.min_xy), duodenum_lumen, ("duodenum_wall",))
        # spleen: left-posterior under the left dome, long axis along the ribs
        centre = (-78.0 * k + j(4.0), -40.0 * k + j(4.0), self.dome_l - 55.0 * k + j(5.0))
        axes = (24.0 * k * u(0.85, 1.15), 50.0 * k * u(0.85, 1.15), 50.0 * k * u(0.85, 1.15))
        sl, r, _ = self.ellipsoid(centre, axes, _rotation(az=math.radians(u(25.0, 45.0))), self.wobble(3, 0.07))
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl), "spleen")
        # pancreas: head in the duodenal C-loop, neck anterior to the portal confluence, body over the aorta, tail
        path = [(30.0, 24.0, -2.0), (30.0, 24.0, 8.0), (8.0, 32.0, 18.0), (-25.0, 30.0, 25.0), (-58.0, 8.0, 35.0)]
        path.append((-72.0, -8.0, 42.0))
        points = [(x * k + j(3.0), y * k + j(3.0), z * k + j(3.0)) for x, y, z in path]
        radii = [
            13.0 * k * u(0.85, 1.15),
            14.0 * k * u(0.85, 1.15),
            10.0 * k,
            10.0 * k * u(0.85, 1.15),
            9.0 * k,
            8.0 * k,
        ]
        self._paint_tube(points, radii, "pancreas")
        # kidneys
        self._kidney(self.kidney_r, 1.0, "right_kidney")
        self._kidney(self.kidney_l, -1.0, "left_kidney")
        # IVC: from the confluence of the iliac veins through the liver to the right atrium
        z_conf = self.z_bif - 12.0 * k
        path = [
            (22.0, 2.0, z_conf / k),
            (22.0, 3.0, 40.0),
            (24.0, -4.0, self.dome_r / k - 40.0),
            (15.0, 8.0, self.dome_r / k + 12.0),
        ]
        points = [(x * k + j(2.0), y * k + j(2.0), z * k) for x, y, z in path]
        points[0] = (points[0][0], self.y_vb + 24.0 * k, z_conf)
        self._paint_tube(points, [10.0 * k * u(0.9, 1.1)] * 4, "ivc", "any")
        # aorta: descending thoracic (left anterolateral of the spine) to the bifurcation; wall calcifications
        r_ao = 11.0 * k * u(0.9, 1.1)
        y_ao = self.y_vb + 16.0 * k + r_ao + 2.0 * k
        path = [
            (-28.0 * k, self.y_vb + 6.0 * k, self.z_last + 20.0),
            (-18.0 * k, self.y_vb + 14.0 * k, self.dome_l - 20.0 * k),
            (-12.0 * k, y_ao, 20.0 * k),
            (-8.0 * k, y_ao + 2.0 * k, self.z_bif),
        ]
        self._paint_tube(path, [1.1 * r_ao, r_ao, 0.95 * r_ao, 0.85 * r_ao], "aorta", "any")
        for _ in range(int(self.rng.integers(0, 4))):
            t = self.u(0.55, 0.95)
            z = path[2][2] + (self.z_bif - path[2][2]) * (t - 0.55) / 0.4
            angle = self.u(0.0, 2 * math.pi)
            p = (-10.0 * k + r_ao * math.cos(angle), y_ao + 1.0 * k + r_ao * math.sin(angle), z)
            sl, r, _ = self.ellipsoid(p, (3.0 * k, 3.0 * k, 4.0 * k), clamp=False)
            if sl is not None:
                self.put(sl, (r < 1.0) & (self.tissue[sl] == _T["aorta"]), "aorta_calcification")
        # esophagus: anterior to the spine, right of the aorta, to the cardia through the hiatus
        path = [
            (2.0 * k, self.y_vb + 28.0 * k, self.z_last + 20.0),
            (-8.0 * k, 10.0 * k, self.dome_l - 10.0 * k),
            (-18.0 * k, 16.0 * k, self.dome_l - 25.0 * k),
            tuple(float(v) for v in self.gej),
        ]
        gas = self.rng.random() < 0.5
        for sl, depth, _, radius in self.tube(path, [8.0 * k] * 4, min_radius=1.3):
            ok = (depth > 0) & self.allowed(sl, "any")
            self.put(sl, ok, "esophagus_wall")
            if gas:
                self.put(sl, ok & (depth > 0.6 * radius), "esophagus_lumen")
        # adrenals: thin plates above / medial to the upper poles, oriented antero-posteriorly
        rk, lk = self.kidney_r, self.kidney_l
        for name, centre, angle in (
            (
                "right_adrenal",
                (34.0 * k + j(3.0), -20.0 * k + j(3.0), rk[2] + self.kidney_len + 8.0 * k),
                u(50.0, 80.0),
            ),
            (
                "left_adrenal",
                (-32.0 * k + j(3.0), -14.0 * k + j(3.0), lk[2] + self.kidney_len - 5.0 * k),
                u(100.0, 130.0),
            ),
        ):
            axes = (13.0 * k * u(0.85, 1.15), 3.0 * k, 16.0 * k * u(0.85, 1.15))
            rot = _rotation(az=math.radians(angle))
            sl, r, _ = self.ellipsoid(centre, axes, rot, self.wobble(2, 0.05), min_size=(2.0, 1.2, 1.5))
            if sl is not None:
                self.put(sl, (r < 1.0) & self.allowed(sl, "any"), name)
