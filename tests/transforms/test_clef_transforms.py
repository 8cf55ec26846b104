"""CLEF preprocessing (§2.1) and post-processing (§2.3) transforms: values, spacing, inversion, errors naming files."""

from __future__ import annotations

import gzip
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, Invertd

from monai_contrastive.transforms.ct import (
    AsOrganLabels,
    AsOrganLabelsd,
    CLEFPreprocess,
    CLEFPreprocessd,
    LoadVolumed,
    ValidateCTd,
    voxel_spacing,
)

SPACING = (0.75, 0.75, 3.0)


def _case(tmp_path, name="case", shape=(40, 36, 12), lps=True, body=True):
    """An LPS-stored CT (negative diagonal) with air around a box of soft tissue and a label inside it."""
    hu = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    if body:
        hu[5:30, 8:28, 2:10] = 40.0
        hu[10:20, 12:20, 4:8] = 500.0  # bone, clipped to 300
        label[10:20, 12:20, 4:8] = 3
        label[22:28, 10:14, 3:6] = 1
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0]) if lps else np.diag([*SPACING, 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    img_path, lab_path = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(img_path))
    nib.save(nib.Nifti1Image(label, affine), str(lab_path))
    return str(img_path), str(lab_path), hu, label, affine


def _pipeline(size=(16, 16, 16)):
    keys = ["image", "label"]
    return Compose(
        [
            LoadVolumed(keys, image_only=True),
            ValidateCTd(num_classes=14),
            EnsureChannelFirstd(keys),
            CLEFPreprocessd(keys, spatial_size=size),
        ]
    )


def test_preprocessing_values_spacing_and_body(tmp_path):
    img, lab, hu, _, affine = _case(tmp_path)
    out = _pipeline()({"image": img, "label": lab})
    x, y = out["image"], out["label"]
    assert x.shape == (1, 16, 16, 16) and y.shape == (1, 16, 16, 16)
    assert float(x.min()) >= -1.0 and float(x.max()) == pytest.approx(1.0)  # 500 HU clipped at 300 -> 1
    # soft tissue 40 HU -> (40 + 200) / 500 * 2 - 1 = -0.04 somewhere inside
    assert torch.isclose(x, torch.tensor(-0.04), atol=1e-4).any()
    # crop to the body box (25 x 20 x 8 voxels) resized to 16^3: spacing per axis, RAS-reoriented (flips only)
    want = torch.tensor([25 * SPACING[0] / 16, 20 * SPACING[1] / 16, 8 * SPACING[2] / 16])
    assert torch.allclose(out["spacing_mm"], want, atol=1e-5)
    assert torch.allclose(voxel_spacing(x), want, atol=1e-5)
    a = np.asarray(x.affine)
    assert a[0, 0] > 0 and a[1, 1] > 0 and a[2, 2] > 0  # canonical RAS
    assert out["body"].dtype == torch.uint8 and out["body"].float().mean() > 0.9  # the crop is (nearly) all body
    assert set(torch.unique(y).tolist()) <= {0, 1, 3}


@pytest.mark.parametrize("size", [(25, 20, 8), (32, 32, 16)])
def test_inversion_returns_the_label_to_the_input_grid(tmp_path, size):
    """Crop, resize and reorientation undone: the original shape and affine; with the box's own size (no resampling)
    every voxel is back exactly, with resampling the organ stays where it was (centroid within a voxel)."""
    img, lab, _, label, affine = _case(tmp_path)
    pre = _pipeline(size=size)
    out = pre({"image": img, "label": lab})
    # as in evaluation and inference: per-organ probabilities (here the one-hot label) inverted with trilinear
    # interpolation (zero padding outside the crop), then §2.3's threshold + argmax
    onehot = torch.nn.functional.one_hot(out["label"][0].long(), 14).movedim(-1, 0)[1:].float()
    out["pred"] = out["label"].clone().float().repeat(13, 1, 1, 1)
    out["pred"].copy_(onehot)
    back = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(out)["pred"]
    assert tuple(back.shape[1:]) == label.shape
    assert np.allclose(np.asarray(back.affine), affine, atol=1e-4)
    back = AsOrganLabels()(back)
    assert np.allclose(np.asarray(back.affine), affine, atol=1e-4)
    got = back[0].numpy().astype(np.uint8)
    if size == (25, 20, 8):
        assert np.array_equal(got, label)
    else:
        assert (got == label).mean() > 0.97
        for organ in (1, 3):
            assert np.abs(np.argwhere(got == organ).mean(0) - np.argwhere(label == organ).mean(0)).max() < 1.0


def test_array_version_inverts_too(tmp_path):
    img, _, hu, _, _ = _case(tmp_path, lps=False)
    from monai.transforms import LoadImage

    x = LoadImage(image_only=True, ensure_channel_first=True)(img)
    t = CLEFPreprocess(spatial_size=(20, 20, 20))
    y = t(x)
    assert y.shape == (1, 20, 20, 20) and float(y.max()) <= 1.0
    back = t.inverse(y)
    assert tuple(back.shape) == (1, *hu.shape)


def _error_chain(fn, *args) -> str:
    """The messages of the error ``fn(*args)`` raises and of its causes (MONAI's Compose wraps a transform's error)."""
    with pytest.raises(Exception) as info:
        fn(*args)
    e, texts = info.value, []
    while e is not None:
        texts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(texts)


def test_errors_name_the_file(tmp_path):
    img, lab, *_ = _case(tmp_path, name="air_only", body=False)
    assert re.search(
        r"ValueError: .*air_only.nii.gz.*no voxel above -500", _error_chain(_pipeline(), {"image": img, "label": lab})
    )
    # without ValidateCTd in front, the preprocessing names the file itself
    pre = Compose([LoadVolumed("image", image_only=True), EnsureChannelFirstd("image"), CLEFPreprocessd("image")])
    assert re.search(r"ValueError: .*air_only.nii.gz.*no voxel above -500", _error_chain(pre, {"image": img}))
    flat = tmp_path / "slice2d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(flat))
    assert re.search(r"ValueError: .*slice2d.nii.gz.*3D", _error_chain(pre, {"image": str(flat)}))
    four = tmp_path / "series4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), str(four))
    assert re.search(r"ValueError: .*series4d.nii.gz", _error_chain(pre, {"image": str(four)}))
    img, lab, *_ = _case(tmp_path, name="shifted")
    moved = nib.load(lab)
    aff = moved.affine.copy()
    aff[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(moved.dataobj), aff), lab)
    assert re.search(
        r"ValueError: .*shifted_seg.nii.gz.*different affines", _error_chain(_pipeline(), {"image": img, "label": lab})
    )
    img, lab, *_ = _case(tmp_path, name="truncated")
    data = open(img, "rb").read()
    with open(img, "wb") as f:
        f.write(data[: len(data) // 2])
    assert gzip  # the truncated file is a gzip stream cut in half
    assert re.search(r"RuntimeError: .*truncated.nii.gz", _error_chain(_pipeline(), {"image": img, "label": lab}))


def test_post_processing_thresholds_then_argmax():
    probs = torch.tensor([[0.2, 0.7, 0.6, 0.49], [0.1, 0.2, 0.9, 0.3]]).reshape(2, 4, 1, 1)
    labels = AsOrganLabels()(probs)
    assert labels.shape == (1, 4, 1, 1) and labels.dtype == torch.uint8
    assert labels.flatten().tolist() == [0, 1, 2, 0]  # every channel < 0.5 -> background, else 1 + argmax
    logits = torch.logit(probs)
    assert AsOrganLabelsd("pred", sigmoid=True)({"pred": logits})["pred"].flatten().tolist() == [0, 1, 2, 0]
