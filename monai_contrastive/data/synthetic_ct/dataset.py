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
"""Writing the synthetic CT demo dataset: cases rendered (in parallel), written as NIfTI the way converted clinical CT
comes, the Decathlon datalist written last, and the whole folder reused while its parameters are unchanged."""

from __future__ import annotations

import contextlib
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import nibabel as nib
import numpy as np

from monai_contrastive.data.cache import generated_dataset_cached
from monai_contrastive.data.ct_labels import CONTRAST_PHASES, flare22_channel_def
from monai_contrastive.data.synthetic_ct.rendering import render_case
from monai_contrastive.io import atomic_path, atomic_write_json

__all__ = ["generate_ct_demo"]

# bump whenever the image model changes, so that cached demo folders are regenerated
_GENERATOR_VERSION = 1
_DATALIST_NAME = "dataset.json"
_PARAMS_NAME = "demo_params.json"
_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "imagesUn")
_CASE_FILE_RE = re.compile(r"^CT[LU]\d{4,}\.nii\.gz$")
_TMP_FILE_RE = re.compile(r"^\.CT[LU]\d{4,}\.\d+\.tmp\.nii\.gz$")


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

    Files written under ``output_dir`` (the image model: the ``lrc_multiorgan_ct`` bundle's ``docs/synthetic_ct.md``)::

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
