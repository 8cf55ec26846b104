"""Dataset readers for the public formats, video decoding, caching and normalisation, and the synthetic demo-data
generators of the bundles."""

from __future__ import annotations

import importlib
from typing import Any

from .cache import file_digest, generated_dataset_cached, item_file_hash, transform_settings_hash
from .datalist import (
    check_loader_batches,
    items_fingerprint,
    load_regression_datalist,
    patient_grouped_folds,
    resolve_datalist,
    select_fold,
    share_worker_tempdir,
)
from .echonet import load_echo_split, load_echonet_filelist, load_video_datalist
from .formats import dicom_photometric_interpretation, is_dicom_file
from .segmentation import list_images, load_image_items, load_segmentation_datalist, take_items
from .video import (
    CheckedThreadDataLoader,
    VideoCache,
    check_video_files,
    fit_video_normalization,
    load_normalization,
    read_video,
    save_normalization,
    video_header,
    video_normalization,
)

# demo dataset name -> dotted path of its generator, ``f(output_dir, **kwargs) -> datalist path``; imported lazily
# by ``resolve_datalist`` so that one demo's dependencies (nibabel, PIL, OpenCV) are not needed by the others
DEMO_GENERATORS: dict[str, str] = {
    "bmd_xray": "monai_contrastive.data.synthetic_bmd.generate_bmd_demo",
    "lvef_echo": "monai_contrastive.data.synthetic_echo.generate_echo_demo",
    "multiorgan_ct": "monai_contrastive.data.synthetic_ct.generate_ct_demo",
}
_LAZY = {path.rsplit(".", 1)[1]: path for path in DEMO_GENERATORS.values()}


def __getattr__(name: str) -> Any:
    """``from monai_contrastive.data import generate_ct_demo`` imports the generator's module on first use."""
    if name in _LAZY:
        module, attr = _LAZY[name].rsplit(".", 1)
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "dicom_photometric_interpretation",
    "file_digest",
    "generated_dataset_cached",
    "is_dicom_file",
    "item_file_hash",
    "load_image_items",
    "transform_settings_hash",
    "DEMO_GENERATORS",
    "VideoCache",
    "fit_video_normalization",
    "generate_bmd_demo",
    "generate_ct_demo",
    "generate_echo_demo",
    "load_echo_split",
    "load_echonet_filelist",
    "load_normalization",
    "load_video_datalist",
    "read_video",
    "save_normalization",
    "video_normalization",
    "CheckedThreadDataLoader",
    "check_video_files",
    "video_header",
    "load_regression_datalist",
    "patient_grouped_folds",
    "resolve_datalist",
    "select_fold",
    "check_loader_batches",
    "items_fingerprint",
    "share_worker_tempdir",
    "list_images",
    "load_segmentation_datalist",
    "take_items",
]
