"""Dataset readers for the public formats and the synthetic demo-data generators of the bundles."""

from __future__ import annotations

from .datalist import load_regression_datalist, patient_grouped_folds, resolve_datalist, select_fold
from .synthetic_bmd import generate_bmd_demo

# demo dataset name -> dotted path of its generator, ``f(output_dir, **kwargs) -> datalist path``; imported lazily
# by ``resolve_datalist`` so that one demo's dependencies are not needed by the others
DEMO_GENERATORS: dict[str, str] = {
    "bmd_xray": "monai_contrastive.data.synthetic_bmd.generate_bmd_demo",
    "lvef_echo": "monai_contrastive.data.synthetic_echo.generate_echo_demo",
}

__all__ = [
    "DEMO_GENERATORS",
    "generate_bmd_demo",
    "load_regression_datalist",
    "patient_grouped_folds",
    "resolve_datalist",
    "select_fold",
]
