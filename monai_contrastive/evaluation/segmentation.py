"""
Per-organ Dice and normalised surface Dice (NSD) of multi-organ segmentations, and the evaluation run of a trained
segmentation network on labelled cases, scored on each case's original label grid.

Conventions (FLARE22-style reports):

- organs are the label values ``1 .. num_classes - 1``; 0 is background and is not scored.
- an organ absent from a case's ground truth has no Dice or NSD for that case: both are NaN, the case is counted
  as ``absent`` for that organ and left out of the organ's mean. A prediction of that absent organ is counted as a
  ``false_positive`` for the organ (a count column of the reports), not folded into the Dice (FLARE22's script
  scores it 0, and an absent organ correctly not predicted 1; this averages neither into the organ means).
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

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.metrics import compute_dice, compute_surface_dice
from monai.transforms import LoadImage
from monai.utils import ensure_tuple
from tqdm import tqdm

from monai_contrastive.data.ct_labels import FLARE22_ORGANS
from monai_contrastive.evaluation.tables import _mean_std, write_csv, write_json, write_metrics_table
from monai_contrastive.handlers.checkpoint import load_model_weights

__all__ = ["FLARE22_NSD_TOLERANCE_MM", "SegmentationEvaluation", "segmentation_metrics"]

logger = logging.getLogger(__name__)

FLARE22_NSD_TOLERANCE_MM: dict[str, float] = dict(
    zip(FLARE22_ORGANS, (5.0, 3.0, 3.0, 5.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 5.0, 7.0, 3.0))
)
"""NSD tolerance (mm) per FLARE22 organ, from the official FLARE22 evaluation script (keys: ``FLARE22_ORGANS``)."""

_METRICS = ("dice", "nsd")
_CSV_HEADER = ("case", "phase", "organ", "dice", "nsd", "absent", "false_positive", "gt_voxels", "pred_voxels")


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.as_tensor() if isinstance(x, MetaTensor) else x
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _label_map(x: Any, ndim: int, what: str) -> np.ndarray:
    """``x`` as an (H, W[, D]) array: a leading singleton channel is dropped."""
    a = _numpy(x)
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


def _tolerances(nsd_tolerance_mm: float | Sequence[float], num_organs: int) -> list[float]:
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
        ``dice`` / ``nsd`` are NaN where ``absent`` (no ground-truth voxel); ``false_positive`` is True where the
        organ is absent but predicted.

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
    tol = _tolerances(nsd_tolerance_mm, num_classes - 1)
    out: dict[str, list] = {k: [] for k in ("dice", "nsd", "absent", "false_positive", "gt_voxels", "pred_voxels")}
    for c in range(1, num_classes):
        gm, pm = g == c, p == c
        n_gt, n_pred = int(gm.sum()), int(pm.sum())
        if n_gt == 0:
            dice = nsd = math.nan
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


def _summary(values: Sequence[float]) -> dict:
    """Mean and sample std of the non-NaN ``values`` and their count; ``None`` (JSON null) when there are none."""
    valid = [float(v) for v in values if not math.isnan(v)]
    if not valid:
        return {"mean": None, "std": None, "n": 0}
    mean, std = _mean_std(valid)
    return {"mean": mean, "std": std, "n": len(valid)}


def _nanmean(values: Sequence[float]) -> float:
    valid = [v for v in values if not math.isnan(v)]
    return sum(valid) / len(valid) if valid else math.nan


def _fmt(s: Mapping, digits: int = 4) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _organ_names(organ_names: Sequence[str] | Mapping[Any, str]) -> list[str]:
    """Organ ``c`` (label value ``c >= 1``) at index ``c - 1``, from organ names or a bundle's ``channel_def``."""
    if isinstance(organ_names, Mapping):
        by_value = {int(k): str(v) for k, v in organ_names.items()}
        n = max(by_value) if by_value else 0
        missing = [c for c in range(1, n + 1) if c not in by_value]
        if missing:
            raise ValueError(f"channel_def lacks label values {missing}.")
        names = [by_value[c] for c in range(1, n + 1)]
    else:
        names = [str(n) for n in organ_names]
    if not names:
        raise ValueError("SegmentationEvaluation needs at least one organ name.")
    if len(set(names)) != len(names):
        raise ValueError(f"organ names are not unique: {names}.")
    return names


def _case_name(item: Mapping, index: int, image_key: str, case_key: str) -> str:
    if item.get(case_key) is not None:
        return str(item[case_key])
    image = item.get(image_key)
    if isinstance(image, (str, os.PathLike)):
        base = os.path.basename(str(image))
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".gz"):
            if base.endswith(ext):
                return base[: -len(ext)]
        return base
    return f"case {index}"


class SegmentationEvaluation:
    """
    Score a segmentation network on labelled CT cases, per organ, per case and per contrast phase, with the metrics
    computed on each case's original label grid and spacing (not on the resampled grid the network sees).

    For each item: ``preprocessing`` (loading, orientation, spacing, intensity scaling, cropping: MONAI transforms
    that record their operations) gives the network input; ``inferer`` runs the network on it (MONAI
    ``SliceInferer(roi_size, spatial_dim=2)`` for 2D networks, ``SlidingWindowInferer`` for 3D ones; a dict output is
    reduced to ``output_key``); ``postprocessing`` receives the decollated item with the network output under
    ``pred_key`` and must return the prediction on the original image grid, typically::

        Compose([
            Activationsd("pred", softmax=True),
            Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False),
            AsDiscreted("pred", argmax=True),
            # optionally SaveImaged("pred", output_dir=..., resample=False) to keep the predictions
        ])

    (a prediction with several channels left is turned into labels with an argmax). The ground truth is read
    from the item's label path with ``loader`` (``LoadImage``, the reader the preprocessing's ``LoadImaged`` picks),
    so it is exactly the stored label map; the prediction must have its shape and affine (atol 1e-3 mm), else a
    ``ValueError`` names the case (a postprocessing that does not invert the preprocessing). The NSD spacing is
    the label's ``pixdim``.

    Writes to ``output_dir``:

    - ``seg_metrics.csv``: one row per case and organ: case, phase, organ, dice, nsd, absent, false_positive,
      gt_voxels, pred_voxels (NaN Dice / NSD where the organ is absent from the ground truth);
    - ``seg_metrics.json``: per organ Dice and NSD mean ± std over the cases where it is present, ``n_absent`` and
      ``n_false_positive``; ``overall``: mean ± std over cases of each case's mean over its present organs; the
      same per phase; per case means; ``n_cases``; the tolerances used;
    - ``seg_metrics.md``: the per-organ, per-phase and per-case tables;
    - ``seg_overlay.png``: for each case (up to ``overlay_max_cases``) the axial slice with the most ground-truth
      foreground, ground truth and prediction side by side over the CT (``window_hu``), one fixed colour per organ.
      Axial is the array axis closest to the superior-inferior direction of the label's affine; the slice is drawn
      with the first remaining array axis across and the second down (the radiological view for the usual
      LPS-stored NIfTI / DICOM), pixels at their physical aspect ratio.

    Args:
        network: the segmentation network (its output: class logits / probabilities (B, C, ...)).
        items: labelled cases, datalist dicts ``{"image": path, "label": path, "phase": ..., "case": ...}``.
        preprocessing: transform from an item to the network input under ``image_key`` (channel-first).
        inferer: ``inferer(inputs, network)`` -> output (1, C, ...), e.g. ``SliceInferer`` / ``SlidingWindowInferer``.
        postprocessing: transform from the item with ``pred_key`` to the prediction on the original grid.
        organ_names: names of label values ``1 ..`` in order (e.g. ``FLARE22_ORGANS``), or a bundle's
            ``channel_def`` ``{"0": "background", "1": "liver", ...}``; gives ``num_classes = len + 1``.
        output_dir: where the reports go (created).
        ckpt_path: checkpoint to load into ``network`` first (``{key_in_ckpt: state_dict}`` or a bare state
            dict); ``None`` uses the network as given.
        key_in_ckpt: entry of the checkpoint holding the state dict.
        device: evaluation device.
        nsd_tolerance_mm: NSD tolerance in mm: one value, one per organ, or ``{organ name: mm}`` (e.g.
            :py:data:`FLARE22_NSD_TOLERANCE_MM`) covering every organ.
        use_subvoxels: surfel-area weighted NSD (see :py:func:`segmentation_metrics`).
        image_key: image key of the items and of the preprocessed data.
        label_key: label key of the items (paths of the ground truth label maps).
        pred_key: key of the network output handed to ``postprocessing``.
        phase_key: item key of the contrast phase for the per-phase breakdown (skipped when no item has it).
        case_key: item key of the case name (default: the image file name without extension).
        output_key: entry to use when the network (inferer) returns a dict.
        loader: reads a label (and, for the figure, an image) path into a channel-first MetaTensor; default
            ``LoadImage(image_only=True, ensure_channel_first=True)``.
        num_workers: DataLoader workers of the preprocessing.
        amp: autocast the inference.
        overlay_max_cases: cases shown in ``seg_overlay.png`` (the first ones); ``None`` for all, 0 for no figure.
        window_hu: CT display window of the figure (abdominal W400 / L40 by default).
        progress: tqdm progress bar over the cases.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        items: Sequence[dict],
        preprocessing: Callable,
        inferer: Callable,
        postprocessing: Callable,
        organ_names: Sequence[str] | Mapping[Any, str],
        output_dir: str,
        ckpt_path: str | None = None,
        key_in_ckpt: str | None = "model",
        device: str | torch.device = "cpu",
        nsd_tolerance_mm: float | Sequence[float] | Mapping[str, float] = 2.0,
        use_subvoxels: bool = False,
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        phase_key: str | None = "phase",
        case_key: str = "case",
        output_key: str = "pred",
        loader: Callable[[Any], Any] | None = None,
        num_workers: int = 0,
        amp: bool = False,
        overlay_max_cases: int | None = 48,
        window_hu: tuple[float, float] = (-160.0, 240.0),
        progress: bool = True,
    ) -> None:
        self.items = list(items)
        if not self.items:
            raise ValueError("SegmentationEvaluation: no items to evaluate.")
        for i, it in enumerate(self.items):
            if it.get(label_key) is None:
                raise ValueError(
                    f"SegmentationEvaluation: item {i} ({it.get(image_key)!s}) has no ground truth under {label_key!r}."
                )
        self.network = network
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.organs = _organ_names(organ_names)
        self.num_classes = len(self.organs) + 1
        if isinstance(nsd_tolerance_mm, Mapping):
            missing = [o for o in self.organs if o not in nsd_tolerance_mm]
            if missing:
                raise ValueError(f"nsd_tolerance_mm has no tolerance for {missing}.")
            self.tolerances = [float(nsd_tolerance_mm[o]) for o in self.organs]
        else:
            self.tolerances = _tolerances(nsd_tolerance_mm, len(self.organs))
        self.output_dir = output_dir
        self.ckpt_path = ckpt_path
        self.key_in_ckpt = key_in_ckpt
        self.device = torch.device(device)
        self.use_subvoxels = use_subvoxels
        self.image_key = image_key
        self.label_key = label_key
        self.pred_key = pred_key
        self.phase_key = phase_key
        self.case_key = case_key
        self.output_key = output_key
        self.loader = loader if loader is not None else LoadImage(image_only=True, ensure_channel_first=True)
        self.num_workers = num_workers
        self.amp = amp
        self.overlay_max_cases = overlay_max_cases
        self.window_hu = window_hu
        self.progress = progress

    def _predict(self, batch: dict) -> Any:
        """Network output of one collated item, through ``postprocessing``, as a label map (1, H, W, D)."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
            out = self.inferer(batch[self.image_key].to(self.device), self.network)
        if isinstance(out, Mapping):
            out = out[self.output_key]
        batch[self.pred_key] = out.float()
        pred = self.postprocessing(decollate_batch(batch, detach=True)[0])[self.pred_key]
        if pred.ndim == 3:
            pred = pred[None]
        elif pred.ndim == 4 and pred.shape[0] > 1:
            pred = pred.argmax(0, keepdim=True)
        return pred

    def _ground_truth(self, item: Mapping, case: str) -> Any:
        label = item[self.label_key]
        label = self.loader(label) if isinstance(label, (str, os.PathLike)) else label
        if not isinstance(label, MetaTensor):
            raise ValueError(f"case {case}: the ground truth must be a path or a MetaTensor with its affine.")
        return label

    def _check_grid(self, pred: Any, label: MetaTensor, case: str) -> None:
        where = f"case {case} (label {label.meta.get('filename_or_obj', '?')})"
        fix = (
            "the postprocessing must return the prediction to the original image grid, e.g. with "
            f"Invertd({self.pred_key!r}, transform=preprocessing, orig_keys={self.image_key!r})"
        )
        if tuple(pred.shape[1:]) != tuple(label.shape[1:]):
            raise ValueError(
                f"{where}: prediction shape {tuple(pred.shape)} differs from the label's {tuple(label.shape)}; {fix}."
            )
        if isinstance(pred, MetaTensor) and not np.allclose(
            _numpy(pred.affine), _numpy(label.affine), atol=1e-3
        ):  # a prediction left in RAS / resampled space can have the right shape by chance
            raise ValueError(
                f"{where}: prediction affine\n{_numpy(pred.affine).round(4)}\ndiffers from the label's\n"
                f"{_numpy(label.affine).round(4)}\n{fix}."
            )

    def _overlay_slices(self, item: Mapping, label: MetaTensor, pred: Any, case: str, dice: float) -> dict:
        gt, pr = _numpy(label)[0].astype(np.int64), _numpy(pred)[0].astype(np.int64)
        affine = _numpy(label.affine)
        axial = int(np.argmax(np.abs(affine[2, :3])))
        other = tuple(a for a in range(3) if a != axial)
        source = gt if gt.any() else pr
        idx = int(np.argmax((source > 0).sum(axis=other))) if source.any() else gt.shape[axial] // 2
        image = None
        path = item.get(self.image_key)
        if isinstance(path, (str, os.PathLike)):
            img = _numpy(self.loader(path))
            if img.shape[1:] == gt.shape:
                image = np.take(img[0], idx, axis=axial).T
        spacing = [float(s) for s in label.pixdim]
        return {
            "case": case,
            "image": image,
            "gt": np.take(gt, idx, axis=axial).T,
            "pred": np.take(pr, idx, axis=axial).T,
            "aspect": spacing[other[1]] / spacing[other[0]],
            "title": f"slice {idx}, Dice {dice:.3f}" if not math.isnan(dice) else f"slice {idx}",
        }

    def run(self) -> dict:
        """Predict and score every case, write the reports and the figure, and return the JSON content."""
        if self.ckpt_path is not None:
            load_model_weights(self.network, self.ckpt_path, self.key_in_ckpt, self.device)
        self.network.to(self.device).eval()
        os.makedirs(self.output_dir, exist_ok=True)
        loader = DataLoader(
            Dataset(self.items, self.preprocessing), batch_size=1, shuffle=False, num_workers=self.num_workers
        )
        has_phase = bool(self.phase_key) and any(it.get(self.phase_key) is not None for it in self.items)
        rows: list[list] = []
        per_case: dict[str, dict] = {}
        panels: list[dict] = []
        bar = tqdm(loader, total=len(self.items), desc="segmentation evaluation", disable=not self.progress)
        for i, batch in enumerate(bar):
            item = self.items[i]
            case = _case_name(item, i, self.image_key, self.case_key)
            if case in per_case:  # two files with one name in different folders
                case = f"{case} (item {i})"
            phase = str(item.get(self.phase_key)) if has_phase and item.get(self.phase_key) is not None else ""
            pred = self._predict(batch)
            label = self._ground_truth(item, case)
            self._check_grid(pred, label, case)
            m = segmentation_metrics(
                pred,
                label,
                self.num_classes,
                [float(s) for s in label.pixdim],
                self.tolerances,
                self.use_subvoxels,
            )
            for k, organ in enumerate(self.organs):
                rows.append(
                    [
                        case,
                        phase,
                        organ,
                        m["dice"][k],
                        m["nsd"][k],
                        int(m["absent"][k]),
                        int(m["false_positive"][k]),
                        m["gt_voxels"][k],
                        m["pred_voxels"][k],
                    ]
                )
            per_case[case] = {
                "phase": phase,
                "dice": _nanmean(m["dice"]),
                "nsd": _nanmean(m["nsd"]),
                "n_absent": sum(m["absent"]),
                "n_false_positive": sum(m["false_positive"]),
            }
            if self.overlay_max_cases is None or len(panels) < self.overlay_max_cases:
                panels.append(self._overlay_slices(item, label, pred, case, per_case[case]["dice"]))
        result = self._summarise(rows, per_case, has_phase)
        self._write(rows, result)
        if panels:
            self._overlay(panels)
        return result

    def _organ_summary(self, rows: Sequence[Sequence]) -> dict:
        out = {}
        for organ in self.organs:
            r = [row for row in rows if row[2] == organ]
            out[organ] = {
                "dice": _summary([row[3] for row in r]),
                "nsd": _summary([row[4] for row in r]),
                "n_absent": sum(row[5] for row in r),
                "n_false_positive": sum(row[6] for row in r),
            }
        return out

    def _summarise(self, rows: list[list], per_case: dict[str, dict], has_phase: bool) -> dict:
        def overall(cases: Sequence[str]) -> dict:
            return {k: _summary([per_case[c][k] for c in cases]) for k in _METRICS}

        result: dict[str, Any] = {
            "n_cases": len(per_case),
            "num_classes": self.num_classes,
            "checkpoint": os.path.abspath(self.ckpt_path) if self.ckpt_path else None,
            "nsd_tolerance_mm": dict(zip(self.organs, self.tolerances)),
            "use_subvoxels": self.use_subvoxels,
            "overall": overall(list(per_case)),
            "organs": self._organ_summary(rows),
            "phases": {},
            "cases": {
                c: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
                for c, m in per_case.items()
            },
        }
        if has_phase:
            for phase in sorted({m["phase"] for m in per_case.values()}):
                cases = [c for c, m in per_case.items() if m["phase"] == phase]
                result["phases"][phase or "unknown"] = {
                    "n_cases": len(cases),
                    "overall": overall(cases),
                    "organs": self._organ_summary([r for r in rows if r[1] == phase]),
                }
        return result

    def _write(self, rows: list[list], result: dict) -> None:
        write_csv(os.path.join(self.output_dir, "seg_metrics.csv"), _CSV_HEADER, rows)
        write_json(os.path.join(self.output_dir, "seg_metrics.json"), result)
        md = os.path.join(self.output_dir, "seg_metrics.md")
        tol = ", ".join(f"{o} {t:g}" for o, t in zip(self.organs, self.tolerances))
        if len(set(self.tolerances)) == 1:
            tol = f"{self.tolerances[0]:g} for all organs"
        table = {
            organ: {
                "dice": _fmt(s["dice"]),
                "nsd": _fmt(s["nsd"]),
                "n": s["dice"]["n"],
                "absent": s["n_absent"],
                "false positives": s["n_false_positive"],
            }
            for organ, s in result["organs"].items()
        }
        table["mean over cases"] = {k: _fmt(result["overall"][k]) for k in _METRICS} | {"n": result["n_cases"]}
        write_metrics_table(
            md,
            table,
            f"Segmentation, {result['n_cases']} cases: Dice and NSD (tolerance in mm: {tol}), mean ± std over the "
            "cases where the organ is present",
            ["dice", "nsd", "n", "absent", "false positives"],
        )
        if result["phases"]:
            phases = result["phases"]
            columns = [f"{k} ({p}, n={v['n_cases']})" for p, v in phases.items() for k in _METRICS]
            by_phase: dict[str, dict] = {o: {} for o in self.organs}
            by_phase["mean over cases"] = {}
            for p, v in phases.items():
                for k in _METRICS:
                    col = f"{k} ({p}, n={v['n_cases']})"
                    for o in self.organs:
                        by_phase[o][col] = _fmt(v["organs"][o][k])
                    by_phase["mean over cases"][col] = _fmt(v["overall"][k])
            write_metrics_table(md, by_phase, "Per contrast phase", columns, append=True)
        cases = {
            c: {
                "phase": m["phase"],
                "dice": "n/a" if m["dice"] is None else f"{m['dice']:.4f}",
                "nsd": "n/a" if m["nsd"] is None else f"{m['nsd']:.4f}",
                "absent": m["n_absent"],
                "false positives": m["n_false_positive"],
            }
            for c, m in result["cases"].items()
        }
        write_metrics_table(
            md,
            cases,
            "Per case (mean over the organs present)",
            ["phase", "dice", "nsd", "absent", "false positives"],
            append=True,
        )
        text = open(md).read()
        logger.debug("\n" + text)  # shown once: print() below (info would repeat it on the console)
        print(text, flush=True)

    def _colours(self) -> np.ndarray:
        """(num_classes, 4) RGBA per label value, background transparent; organ ``c`` always gets one colour."""
        import matplotlib

        cmap = matplotlib.colormaps["tab20"]
        colours = np.zeros((self.num_classes, 4))
        for c in range(1, self.num_classes):
            # tab20 pairs a dark and a light shade of each hue: the 10 dark hues first, then the light ones
            k = (c - 1) % 20
            colours[c] = cmap(2 * k if k < 10 else 2 * (k - 10) + 1)
            colours[c, 3] = 0.6
        return colours

    def _overlay(self, panels: list[dict]) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.patches import Patch
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            return
        colours = self._colours()
        per_row = min(len(panels), 3)
        nrows = math.ceil(len(panels) / per_row)
        legend_rows = math.ceil(len(self.organs) / 5)
        height = 2.8 * nrows + 0.25 * legend_rows + 0.2
        fig, axes = plt.subplots(
            nrows, 2 * per_row, figsize=(2.5 * 2 * per_row, height), squeeze=False, layout="constrained"
        )
        for ax in axes.flat:
            ax.axis("off")
        for k, p in enumerate(panels):
            r, c = divmod(k, per_row)
            for j, (key, what) in enumerate((("gt", "ground truth"), ("pred", "prediction"))):
                ax = axes[r, 2 * c + j]
                lab = np.clip(p[key], 0, self.num_classes - 1)
                if p["image"] is not None:
                    lo, hi = self.window_hu
                    ax.imshow(p["image"], cmap="gray", vmin=lo, vmax=hi, aspect=p["aspect"], interpolation="nearest")
                else:
                    ax.imshow(np.zeros(lab.shape), cmap="gray", vmin=0, vmax=1, aspect=p["aspect"])
                ax.imshow(colours[lab], aspect=p["aspect"], interpolation="nearest")
                ax.set_title(f"{p['case']}: {what}" + (f"\n{p['title']}" if j else ""), fontsize=7)
        handles = [Patch(facecolor=colours[c, :3], label=o) for c, o in enumerate(self.organs, 1)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False)
        fig.savefig(os.path.join(self.output_dir, "seg_overlay.png"), dpi=100)
        plt.close(fig)
