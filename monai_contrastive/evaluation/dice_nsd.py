"""
Per-organ Dice and normalised surface Dice (NSD) of multi-organ segmentations, and the evaluation run of a trained
segmentation network on labelled cases, scored on each case's original label grid.

Conventions (FLARE22-style reports):

- organs are the label values ``1 .. num_classes - 1``; 0 is background and is not scored.
- an organ absent from a case's ground truth but predicted scores Dice 0 and NSD 0 (a hallucinated organ: the
  convention of MONAI's ``DiceMetric(ignore_empty=False)`` and of the FLARE22 evaluation script), is counted as a
  ``false_positive`` and lowers the organ's and the case's mean.
- an organ absent from both the ground truth and the prediction has no Dice or NSD for that case (NaN): it is counted
  as ``absent`` and left out of the means (the reports say how many cases were left out per organ).
- an organ present in the ground truth but not predicted scores Dice 0 and NSD 0.
- NSD (Nikolov et al., 2021, "Clinically applicable segmentation of head and neck anatomy for radiotherapy", Eq. in
  Methods "Surface DSC") is MONAI's ``compute_surface_dice`` (the function behind ``SurfaceDiceMetric``): the
  fraction of the two boundaries that lies within a tolerance of the other boundary, distances in mm from the
  real voxel spacing of the grid the label lives on. With ``use_subvoxels=False`` (MONAI's default) the boundary is
  the set of boundary voxels (mask minus its 6-connected erosion), every boundary voxel weighing the same; with
  ``use_subvoxels=True`` it is the surfel-area weighted surface of the DeepMind ``surface-distance`` package that
  the FLARE challenges' evaluation script uses.
- tolerance: 2 mm for every organ by default (:py:func:`segmentation_metrics` knows no organ names), a parameter.
  :py:data:`FLARE22_NSD_TOLERANCE_MM` holds the per-organ tolerances of the official FLARE22 evaluation script
  (``FLARE22/Evaluation/FLARE22_DSC_NSD_Eval.py`` of github.com/JunMa11/FLARE: 5 mm for liver, pancreas and
  stomach, 7 mm for the duodenum, 3 mm for the kidneys, spleen and esophagus, 2 mm for the rest); pass it as
  ``nsd_tolerance_mm`` to compare with FLARE22 numbers. That script also restricts aorta, IVC and esophagus to the
  axial slices labelled in the ground truth; this module scores whole volumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.metrics import compute_dice, compute_surface_dice
from monai.utils import ensure_tuple

from monai_contrastive.data.ct_labels import FLARE22_ORGANS

__all__ = ["FLARE22_NSD_TOLERANCE_MM", "ORGAN_METRICS", "organ_tolerances", "segmentation_metrics", "to_numpy"]

FLARE22_NSD_TOLERANCE_MM: dict[str, float] = dict(
    zip(FLARE22_ORGANS, (5.0, 3.0, 3.0, 5.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 5.0, 7.0, 3.0))
)
"""NSD tolerance (mm) per FLARE22 organ, from the official FLARE22 evaluation script (keys: ``FLARE22_ORGANS``)."""

ORGAN_METRICS = ("dice", "nsd")
"""The per-organ metrics of :func:`segmentation_metrics`, in report order."""


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (MetaTensor) or array-like as a numpy array on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.as_tensor() if isinstance(x, MetaTensor) else x
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _label_map(x: Any, ndim: int, what: str) -> np.ndarray:
    """``x`` as an (H, W[, D]) array: a leading singleton channel is dropped."""
    a = to_numpy(x)
    if a.ndim == ndim + 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise ValueError(
            f"{what} must be an integer label map with {ndim} spatial dims (one per spacing value), optionally with "
            f"one leading channel; got shape {tuple(a.shape)}."
        )
    return a


def _check_values(a: np.ndarray, num_classes: int, what: str) -> None:
    lo, hi = a.min(), a.max()
    if not (lo >= 0 and hi < num_classes) or (a.dtype.kind == "f" and not np.array_equal(a, np.round(a))):
        bad = [v for v in np.unique(a).tolist() if not (v == int(v) and 0 <= v < num_classes)]
        raise ValueError(f"{what} has values {bad[:10]} outside the label values [0, {num_classes}).")


def organ_tolerances(nsd_tolerance_mm: float | Sequence[float], num_organs: int) -> list[float]:
    """One NSD tolerance (mm) per organ from one value or a list of ``num_organs`` values."""
    if isinstance(nsd_tolerance_mm, (int, float)):
        return [float(nsd_tolerance_mm)] * num_organs
    tol = [float(t) for t in nsd_tolerance_mm]
    if len(tol) != num_organs:
        raise ValueError(f"nsd_tolerance_mm has {len(tol)} values for {num_organs} organs (labels 1..{num_organs}).")
    return tol


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Bounding box of a non-empty ``mask`` grown by ``margin`` voxels inside the array."""
    box = []
    for ax in range(mask.ndim):
        nz = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != ax)))
        box.append(slice(max(int(nz[0]) - margin, 0), min(int(nz[-1]) + 1 + margin, mask.shape[ax])))
    return tuple(box)


def segmentation_metrics(
    pred: Any,
    label: Any,
    num_classes: int,
    spacing: Sequence[float],
    nsd_tolerance_mm: float | Sequence[float] = 2.0,
    use_subvoxels: bool = False,
) -> dict[str, list]:
    """
    Per-organ Dice and NSD of one case: ``pred`` and ``label`` are integer label maps on the same grid.

    Dice is MONAI's ``compute_dice`` and NSD MONAI's ``compute_surface_dice`` (``SurfaceDiceMetric``) with
    ``class_thresholds`` in mm and ``spacing`` the voxel size of the grid; each organ is scored on the bounding box
    of its ground truth and prediction, which changes neither metric. See the module docstring for absent organs.

    Args:
        pred: predicted label map (H, W, D), or (1, H, W, D); values in ``[0, num_classes)``.
        label: ground-truth label map, same shape.
        num_classes: number of label values including background; organs are ``1 .. num_classes - 1``.
        spacing: voxel size in mm along each spatial axis of the arrays, e.g. ``label.pixdim`` of the original
            image (not the resampled training grid).
        nsd_tolerance_mm: NSD tolerance in mm: one value for every organ, or one per organ (labels
            ``1 .. num_classes - 1`` in order), e.g. ``FLARE22_NSD_TOLERANCE_MM.values()``.
        use_subvoxels: surfel-area weighted NSD (DeepMind ``surface-distance`` / FLARE script) instead of MONAI's
            default boundary-voxel NSD.

    Returns:
        ``{"dice": [...], "nsd": [...], "absent": [...], "false_positive": [...], "gt_voxels": [...],
        "pred_voxels": [...]}``, each a list of ``num_classes - 1`` entries, organ ``c`` at index ``c - 1``;
        ``absent`` is True where the ground truth has no voxel of the organ; ``false_positive`` where it is absent
        but predicted, and then ``dice`` / ``nsd`` are 0; absent and not predicted, they are NaN (left out of means).

    Raises:
        ValueError: shapes differ or do not match ``spacing``, values outside ``[0, num_classes)``, or a tolerance
            list of the wrong length.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background and at least one organ), got {num_classes}.")
    spacing = [float(s) for s in ensure_tuple(spacing)]
    p = _label_map(pred, len(spacing), "pred")
    g = _label_map(label, len(spacing), "label")
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} differs from label shape {g.shape}; they must be on the same grid.")
    _check_values(g, num_classes, "label")
    _check_values(p, num_classes, "pred")
    tol = organ_tolerances(nsd_tolerance_mm, num_classes - 1)
    out: dict[str, list] = {k: [] for k in ("dice", "nsd", "absent", "false_positive", "gt_voxels", "pred_voxels")}
    for c in range(1, num_classes):
        gm, pm = g == c, p == c
        n_gt, n_pred = int(gm.sum()), int(pm.sum())
        if n_gt == 0:
            dice = nsd = 0.0 if n_pred else math.nan
        elif n_pred == 0:
            dice = nsd = 0.0  # MONAI gives the same, with a warning per call
        else:
            box = _bbox(gm | pm)
            y_pred = torch.from_numpy(pm[box][None, None].astype(np.float32))
            y = torch.from_numpy(gm[box][None, None].astype(np.float32))
            dice = float(compute_dice(y_pred, y, include_background=True, ignore_empty=True)[0, 0])
            nsd = float(
                compute_surface_dice(
                    y_pred, y, [tol[c - 1]], include_background=True, spacing=spacing, use_subvoxels=use_subvoxels
                )[0, 0]
            )
        out["dice"].append(dice)
        out["nsd"].append(nsd)
        out["absent"].append(n_gt == 0)
        out["false_positive"].append(n_gt == 0 and n_pred > 0)
        out["gt_voxels"].append(n_gt)
        out["pred_voxels"].append(n_pred)
    return out
