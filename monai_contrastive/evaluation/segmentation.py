"""
The evaluation run of a trained segmentation network on labelled CT cases: predictions on each case's original label
grid, scored per organ (:mod:`.dice_nsd`), reported (:mod:`.segmentation_report`) and drawn (:mod:`.figures`).
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
from monai.transforms import LoadImage
from tqdm import tqdm

from monai_contrastive.evaluation.dice_nsd import (
    FLARE22_NSD_TOLERANCE_MM,
    organ_tolerances,
    segmentation_metrics,
    to_numpy,
)
from monai_contrastive.evaluation.figures import segmentation_overlay
from monai_contrastive.evaluation.segmentation_report import (
    OrganRow,
    nanmean,
    summarise_segmentation,
    write_segmentation_report,
)
from monai_contrastive.handlers.checkpoint import load_model_weights

__all__ = ["FLARE22_NSD_TOLERANCE_MM", "SegmentationEvaluation", "segmentation_metrics"]

logger = logging.getLogger(__name__)


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
      gt_voxels, pred_voxels (Dice / NSD 0 where the organ is predicted but not in the ground truth, NaN where it is
      in neither);
    - ``seg_metrics.json``: per organ Dice and NSD mean ± std over the cases where it is in the ground truth or the
      prediction, ``n_absent`` and ``n_false_positive``; ``overall``: mean ± std over cases of each case's mean over
      its organs in the ground truth or the prediction; the
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
            self.tolerances = organ_tolerances(nsd_tolerance_mm, len(self.organs))
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
            to_numpy(pred.affine), to_numpy(label.affine), atol=1e-3
        ):  # a prediction left in RAS / resampled space can have the right shape by chance
            raise ValueError(
                f"{where}: prediction affine\n{to_numpy(pred.affine).round(4)}\ndiffers from the label's\n"
                f"{to_numpy(label.affine).round(4)}\n{fix}."
            )

    def _overlay_slices(self, item: Mapping, label: MetaTensor, pred: Any, case: str, dice: float) -> dict:
        gt, pr = to_numpy(label)[0].astype(np.int64), to_numpy(pred)[0].astype(np.int64)
        affine = to_numpy(label.affine)
        axial = int(np.argmax(np.abs(affine[2, :3])))
        other = tuple(a for a in range(3) if a != axial)
        source = gt if gt.any() else pr
        idx = int(np.argmax((source > 0).sum(axis=other))) if source.any() else gt.shape[axial] // 2
        image = None
        path = item.get(self.image_key)
        if isinstance(path, (str, os.PathLike)):
            img = to_numpy(self.loader(path))
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
        rows: list[OrganRow] = []
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
                    OrganRow(
                        case,
                        phase,
                        organ,
                        m["dice"][k],
                        m["nsd"][k],
                        int(m["absent"][k]),
                        int(m["false_positive"][k]),
                        m["gt_voxels"][k],
                        m["pred_voxels"][k],
                    )
                )
            per_case[case] = {
                "phase": phase,
                "dice": nanmean(m["dice"]),
                "nsd": nanmean(m["nsd"]),
                "n_absent": sum(m["absent"]),
                "n_false_positive": sum(m["false_positive"]),
            }
            if self.overlay_max_cases is None or len(panels) < self.overlay_max_cases:
                panels.append(self._overlay_slices(item, label, pred, case, per_case[case]["dice"]))
        result = summarise_segmentation(
            rows,
            per_case,
            self.organs,
            self.tolerances,
            self.num_classes,
            self.ckpt_path,
            self.use_subvoxels,
            has_phase,
        )
        write_segmentation_report(self.output_dir, rows, result, self.organs, self.tolerances)
        if panels:
            segmentation_overlay(panels, self.organs, os.path.join(self.output_dir, "seg_overlay.png"), self.window_hu)
        return result
