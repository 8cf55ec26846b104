"""segmentation_metrics against hand-counted Dice / NSD, and SegmentationEvaluation end to end on tiny NIfTI cases."""

from __future__ import annotations

import csv
import glob
import json
import math
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SliceInferer
from monai.metrics import DiceMetric, SurfaceDiceMetric, compute_dice
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    ScaleIntensityRanged,
    Spacingd,
)

from monai_contrastive.data.ct_labels import FLARE22_ORGANS
from monai_contrastive.evaluation import FLARE22_NSD_TOLERANCE_MM, SegmentationEvaluation, segmentation_metrics
from monai_contrastive.transforms.ct import ValidateCTd


def _cube(shape=(7, 7, 7), at=(1, 2, 2), size=3) -> np.ndarray:
    a = np.zeros(shape, np.int64)
    a[at[0] : at[0] + size, at[1] : at[1] + size, at[2] : at[2] + size] = 1
    return a


def test_dice_by_counting_absent_and_false_positive():
    label = np.zeros((8, 8, 8), np.int64)
    pred = np.zeros_like(label)
    label[1:4, 1:4, 1:4] = 1  # organ 1: 27 voxels
    pred[1:4, 1:4, 2:5] = 1  # shifted by one slice: 18 voxels in common
    pred[6:8, 6:8, 6:8] = 2  # organ 2 absent from the ground truth but predicted: a false positive
    label[5:7, 1:3, 5:7] = 3  # organ 3 present but missed
    m = segmentation_metrics(torch.as_tensor(pred)[None], label, 5, spacing=(1.0, 1.0, 1.0))
    assert m["dice"][0] == pytest.approx(2 * 18 / (27 + 27))
    # FLARE/MONAI convention: predicted but absent from the ground truth scores 0 (MONAI's Dice with
    # ignore_empty=False gives the same), absent from both is NaN and left out of the means
    assert m["dice"][1] == 0.0 and m["nsd"][1] == 0.0
    fp = torch.as_tensor(pred == 2)[None, None].float(), torch.as_tensor(label == 2)[None, None].float()
    assert float(compute_dice(*fp, include_background=True, ignore_empty=False)[0, 0]) == 0.0
    assert m["dice"][2] == 0.0 and m["nsd"][2] == 0.0
    assert math.isnan(m["dice"][3])  # organ 4: absent and not predicted
    assert m["absent"] == [False, True, False, True]
    assert m["false_positive"] == [False, True, False, False]
    assert m["gt_voxels"] == [27, 0, 8, 0] and m["pred_voxels"] == [27, 8, 0, 0]


def test_nsd_identical_is_one():
    label = _cube() + 2 * _cube(at=(4, 4, 0), size=2)
    m = segmentation_metrics(label, label.copy(), 3, spacing=(0.7, 0.9, 3.0), nsd_tolerance_mm=0.0)
    assert m["dice"] == [1.0, 1.0] and m["nsd"] == [1.0, 1.0]


@pytest.mark.parametrize(
    "axis, spacing, tolerance, expected",
    [
        # one-voxel shift of a 3x3x3 cube along a 3 mm axis, tolerance 2 mm. Boundary voxels (mask minus its
        # 6-connected erosion): 26 per cube (all but the centre). Of the ground truth's 26, the 9 of the face the
        # prediction left are 3 mm from the nearest predicted boundary voxel (too far); the other 17 coincide with
        # a predicted boundary voxel or are 0.8 mm beside one. Symmetrically 17 of the prediction's 26: 34 / 52.
        (2, (0.8, 0.8, 3.0), 2.0, 34 / 52),
        (0, (3.0, 0.8, 0.8), 2.0, 34 / 52),
        # the same shift along a 0.8 mm axis: every boundary voxel within 0.8 mm of the other boundary
        (0, (0.8, 0.8, 3.0), 2.0, 1.0),
        # along the 3 mm axis with a 3 mm tolerance: within tolerance again
        (2, (0.8, 0.8, 3.0), 3.0, 1.0),
    ],
)
def test_nsd_shifted_cube_anisotropic(axis, spacing, tolerance, expected):
    label = _cube()
    pred = np.roll(label, 1, axis=axis)
    m = segmentation_metrics(pred, label, 2, spacing=spacing, nsd_tolerance_mm=tolerance)
    assert m["nsd"][0] == pytest.approx(expected, abs=1e-6)
    assert m["dice"][0] == pytest.approx(2 * 18 / 54)


@pytest.mark.parametrize("use_subvoxels", [False, True])
def test_equals_monai_metrics_on_the_whole_volume(use_subvoxels):
    """The per-organ loop on bounding boxes gives MONAI's DiceMetric / SurfaceDiceMetric on the full one-hot maps."""
    rng = np.random.default_rng(1)
    shape = (40, 36, 16)
    label = np.zeros(shape, np.int64)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    for c in range(1, 5):
        centre, radius = rng.integers((6, 6, 3), (34, 30, 13)), rng.integers(3, 8)
        label[(((grid - centre) * (1, 1, 3)) ** 2).sum(-1) < radius**2] = c
    pred = np.roll(label, 1, axis=2)
    pred[np.roll(label, 2, axis=0) == 3] = 3
    spacing, tol = (0.8, 0.7, 2.5), [1.0, 2.0, 3.0, 2.0]
    m = segmentation_metrics(pred, label, 5, spacing, nsd_tolerance_mm=tol, use_subvoxels=use_subvoxels)

    def one_hot(a):
        return torch.nn.functional.one_hot(torch.as_tensor(a), 5).permute(3, 0, 1, 2)[None].float()

    nsd = SurfaceDiceMetric(tol, include_background=False, use_subvoxels=use_subvoxels)
    nsd(one_hot(pred), one_hot(label), spacing=spacing)
    dice = DiceMetric(include_background=False)
    dice(one_hot(pred), one_hot(label))
    np.testing.assert_allclose(m["nsd"], nsd.aggregate("none")[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(m["dice"], dice.aggregate("none")[0].numpy(), atol=1e-6)
    assert 0.3 < min(m["nsd"]) < 0.99  # a case where the boundary computation matters


def test_per_organ_tolerance_and_errors():
    label = _cube() + 2 * np.roll(_cube(at=(1, 2, 2)), 3, axis=1)
    pred = np.roll(label, 1, axis=2)
    m = segmentation_metrics(pred, label, 3, spacing=(0.8, 0.8, 3.0), nsd_tolerance_mm=[2.0, 3.0])
    assert m["nsd"] == pytest.approx([34 / 52, 1.0])
    with pytest.raises(ValueError, match="2 organs"):
        segmentation_metrics(pred, label, 3, spacing=(1, 1, 1), nsd_tolerance_mm=[1.0])
    with pytest.raises(ValueError, match="outside the label values"):
        segmentation_metrics(pred, label, 2, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="same grid"):
        segmentation_metrics(pred[:-1], label, 3, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="spatial dims"):
        segmentation_metrics(pred, label, 3, spacing=(1, 1))
    assert list(FLARE22_NSD_TOLERANCE_MM) == list(FLARE22_ORGANS)
    assert FLARE22_NSD_TOLERANCE_MM["duodenum"] == 7.0 and FLARE22_NSD_TOLERANCE_MM["liver"] == 5.0


# ---------------------------------------------------------------------------------------------------------------------
# SegmentationEvaluation end to end

# LPS-like storage (i towards the patient's left, j posterior) with anisotropic voxels
AFFINE = np.array([[-0.7, 0, 0, 40.0], [0, -0.9, 0, 30.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])
SHAPE = (24, 20, 7)
ORGANS = ("liver", "spleen")


def _write_case(root, name: str, with_spleen: bool) -> dict:
    img = np.full(SHAPE, -1000.0, np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    img[3:14, 4:13, 1:6], lab[3:14, 4:13, 1:6] = 100.0, 1
    img[16:21, 12:17, 2:5] = 250.0  # bright enough for the stub to call it spleen...
    if with_spleen:
        lab[16:21, 12:17, 2:5] = 2  # ...but labelled spleen only in the first case (the second: a false positive)
    nib.save(nib.Nifti1Image(img, AFFINE), os.path.join(root, f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(lab, AFFINE), os.path.join(root, f"{name}_seg.nii.gz"))
    return {"image": os.path.join(root, f"{name}.nii.gz"), "label": os.path.join(root, f"{name}_seg.nii.gz")}


class _ThresholdNet(torch.nn.Module):
    """Logits of a known rule on [0, 1]-scaled intensities: background < 0.5 <= liver < 0.85 <= spleen."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> dict:
        assert x.ndim == 4, "SliceInferer must hand 2D slices (B, C, H, W) to the network"
        c = (x[:, 0] >= 0.5).long() + (x[:, 0] >= 0.85).long()
        return {"pred": torch.nn.functional.one_hot(c, 3).movedim(-1, 1).float() * self.scale}


def _pipelines(pred_dir: str | None):
    keys = ["image", "label"]
    pre = Compose(
        [
            LoadImaged(keys),
            ValidateCTd(num_classes=3),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS"),
            Spacingd(keys, pixdim=(1.0, 1.0, 2.0), mode=("bilinear", "nearest")),
            ScaleIntensityRanged("image", a_min=-200, a_max=300, b_min=0.0, b_max=1.0, clip=True),
            CropForegroundd(keys, source_key="image", margin=2),
        ]
    )
    post = [
        Activationsd("pred", softmax=True),
        Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
        AsDiscreted("pred", argmax=True),
    ]
    if pred_dir:
        post.append(
            SaveImaged(
                "pred",
                output_dir=pred_dir,
                output_postfix="pred",
                separate_folder=False,
                resample=False,
                output_dtype=np.uint8,
                print_log=False,
            )
        )
    return pre, Compose(post)


def test_segmentation_evaluation_end_to_end(tmp_path):
    items = [
        _write_case(str(tmp_path), "case_a", True) | {"phase": "arterial"},
        _write_case(str(tmp_path), "case_b", False) | {"phase": "portal_venous"},
    ]
    net = _ThresholdNet()
    ckpt = tmp_path / "model.pt"
    torch.save({"model": {"scale": torch.tensor(10.0)}}, ckpt)
    pre, post = _pipelines(str(tmp_path / "preds"))
    out = tmp_path / "eval"
    result = SegmentationEvaluation(
        net,
        items,
        pre,
        SliceInferer(roi_size=(16, 16), spatial_dim=2, sw_batch_size=4),
        post,
        {"0": "background", "1": "liver", "2": "spleen"},
        str(out),
        ckpt_path=str(ckpt),
        nsd_tolerance_mm={"liver": 2.0, "spleen": 1.0},
        progress=False,
    ).run()
    assert float(net.scale) == 10.0  # the checkpoint was loaded
    for f in ("seg_metrics.md", "seg_metrics.csv", "seg_metrics.json", "seg_overlay.png"):
        assert (out / f).stat().st_size > 0, f
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "seg_overlay.png")).ndim == 3

    # the prediction is back on the original grid, and the metrics are those of that prediction vs the stored label
    expected = {}
    for it in items:
        case = os.path.basename(it["image"])[: -len(".nii.gz")]
        (path,) = glob.glob(str(tmp_path / "preds" / f"{case}_pred.nii.gz"))
        saved, label = nib.load(path), nib.load(it["label"])
        assert saved.shape == SHAPE
        np.testing.assert_allclose(saved.affine, AFFINE, atol=1e-5)
        pred = np.asarray(saved.dataobj)
        lab = np.asarray(label.dataobj)
        assert (pred == lab).mean() > 0.9  # the rule recovers the organs up to resampling at their borders
        expected[case] = segmentation_metrics(pred, lab, 3, spacing=(0.7, 0.9, 3.0), nsd_tolerance_mm=[2.0, 1.0])
    with open(out / "seg_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and list(rows[0]) == [
        "case",
        "phase",
        "organ",
        "dice",
        "nsd",
        "absent",
        "false_positive",
        "gt_voxels",
        "pred_voxels",
    ]
    for r in rows:
        m, k = expected[r["case"]], ORGANS.index(r["organ"])
        for metric in ("dice", "nsd"):
            want = m[metric][k]
            assert (math.isnan(want) and r[metric] == "nan") or float(r[metric]) == pytest.approx(want, abs=1e-6)
        assert int(r["absent"]) == m["absent"][k] and int(r["false_positive"]) == m["false_positive"][k]
        assert int(r["gt_voxels"]) == m["gt_voxels"][k] and int(r["pred_voxels"]) == m["pred_voxels"][k]
    a, b = expected["case_a"], expected["case_b"]
    # well above chance, though partial volume at 3 mm -> 2 mm -> 3 mm costs these few-voxel organs their end slices
    assert a["dice"][0] > 0.5 and a["dice"][1] > 0.5 and b["dice"][0] > 0.5
    assert b["absent"] == [False, True] and b["false_positive"] == [False, True]

    assert json.loads((out / "seg_metrics.json").read_text()) == result
    assert result["n_cases"] == 2 and result["nsd_tolerance_mm"] == {"liver": 2.0, "spleen": 1.0}
    liver, spleen = result["organs"]["liver"], result["organs"]["spleen"]
    assert liver["dice"]["mean"] == pytest.approx((a["dice"][0] + b["dice"][0]) / 2)
    assert liver["dice"]["std"] == pytest.approx(abs(a["dice"][0] - b["dice"][0]) / math.sqrt(2))
    # case b predicts the spleen that its ground truth lacks: it scores 0 and lowers the spleen's mean and b's mean
    assert b["dice"][1] == 0.0 and b["nsd"][1] == 0.0
    assert spleen["dice"]["mean"] == pytest.approx(a["dice"][1] / 2) and spleen["dice"]["n"] == 2
    assert spleen["n_absent"] == 1 and spleen["n_false_positive"] == 1 and liver["n_absent"] == 0
    case_means = [(a["nsd"][0] + a["nsd"][1]) / 2, b["nsd"][0] / 2]
    assert result["overall"]["nsd"]["mean"] == pytest.approx(sum(case_means) / 2)
    assert set(result["phases"]) == {"arterial", "portal_venous"}
    assert result["phases"]["portal_venous"]["organs"]["spleen"]["dice"]["mean"] == 0.0
    assert result["phases"]["portal_venous"]["organs"]["spleen"]["n_false_positive"] == 1
    assert result["cases"]["case_b"]["dice"] == pytest.approx(b["dice"][0] / 2)
    md = (out / "seg_metrics.md").read_text()
    assert "| spleen |" in md and "Per contrast phase" in md and "| case_b | portal_venous |" in md
    assert "false positives" in md and "scores 0" in md


def test_prediction_not_inverted_names_the_case(tmp_path):
    items = [_write_case(str(tmp_path), "case_c", True)]
    pre, _ = _pipelines(None)
    with pytest.raises(ValueError, match="case case_c.*Invertd"):
        SegmentationEvaluation(
            _ThresholdNet(),
            items,
            pre,
            SliceInferer(roi_size=(16, 16), spatial_dim=2),
            AsDiscreted("pred", argmax=True),  # left on the resampled, cropped grid
            ORGANS,
            str(tmp_path / "eval"),
            progress=False,
        ).run()
    with pytest.raises(ValueError, match="no ground truth"):
        SegmentationEvaluation(_ThresholdNet(), [{"image": "x.nii.gz"}], pre, None, None, ORGANS, str(tmp_path))
    with pytest.raises(ValueError, match="no tolerance for"):
        SegmentationEvaluation(_ThresholdNet(), items, pre, None, None, ORGANS, str(tmp_path), nsd_tolerance_mm={})
