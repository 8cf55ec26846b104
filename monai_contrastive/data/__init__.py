"""Dataset readers for the public formats, video decoding, caching and normalisation, and the synthetic demo-data
generators of the bundles."""

from __future__ import annotations

from .datalist import load_regression_datalist, patient_grouped_folds, resolve_datalist, select_fold
from .echonet import load_echo_split, load_echonet_filelist, load_video_datalist
from .synthetic_bmd import generate_bmd_demo
from .synthetic_echo import generate_echo_demo
from .video import (
    VideoCache,
    fit_video_normalization,
    load_normalization,
    read_video,
    save_normalization,
    video_normalization,
)

# demo dataset name -> dotted path of its generator, ``f(output_dir, **kwargs) -> datalist path``; imported lazily
# by ``resolve_datalist`` so that one demo's dependencies are not needed by the others
DEMO_GENERATORS: dict[str, str] = {
    "bmd_xray": "monai_contrastive.data.synthetic_bmd.generate_bmd_demo",
    "lvef_echo": "monai_contrastive.data.synthetic_echo.generate_echo_demo",
}

__all__ = [
    "DEMO_GENERATORS",
    "VideoCache",
    "fit_video_normalization",
    "generate_bmd_demo",
    "generate_echo_demo",
    "load_echo_split",
    "load_echonet_filelist",
    "load_normalization",
    "load_video_datalist",
    "read_video",
    "save_normalization",
    "video_normalization",
    "load_regression_datalist",
    "patient_grouped_folds",
    "resolve_datalist",
    "select_fold",
]
