"""ValidateCT / ValidateCTd on tiny NIfTI files, and the MONAI axial slice sampler keeping the in-plane spacing."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, Spacingd
from monai.utils import set_determinism

from monai_contrastive.transforms.ct import (
    LoadVolume,
    LoadVolumed,
    ResampleToSpacingd,
    ValidateCT,
    ValidateCTd,
    axial_slice_sampler,
)

# LPS-like storage (the usual DICOM-derived NIfTI): i towards the patient's left, j posterior, anisotropic voxels
AFFINE = np.array([[-0.7, 0, 0, 50.0], [0, -0.9, 0, 60.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])
SHAPE = (12, 10, 6)


def _save(path, array, affine=AFFINE) -> str:
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return str(path)


def _case():
    img = np.full(SHAPE, -1000.0, np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    img[2:7, 2:6, 1:5], lab[2:7, 2:6, 1:5] = 80.0, 1
    img[8:11, 6:9, 2:4], lab[8:11, 6:9, 2:4] = 250.0, 2
    return img, lab


@pytest.fixture
def files(tmp_path):
    img, lab = _case()
    return {"image": _save(tmp_path / "ct_001.nii.gz", img), "label": _save(tmp_path / "ct_001_seg.nii.gz", lab)}


def _load(item):
    return LoadImaged([k for k in ("image", "label") if k in item])(item)


def _raises(fn, *names):
    """``fn()`` raises ValueError naming every file in ``names``; returns the message."""
    with pytest.raises(ValueError) as e:
        fn()
    for n in names:
        assert n in str(e.value), f"{n!r} not in {e.value}"
    return str(e.value)


def test_valid_case_passes_unchanged(files):
    d = _load(files)
    out = ValidateCTd(num_classes=3)(d)
    assert out["image"] is d["image"] and out["label"] is d["label"]
    img, lab = _case()
    np.testing.assert_array_equal(out["image"].numpy(), img)
    np.testing.assert_array_equal(out["label"].numpy(), lab)
    # array version, and the aliases
    assert ValidateCT(num_classes=3)(d["image"], d["label"]) is d["image"]
    # an organ missing from the label map is not an error
    lab1 = MetaTensor(torch.zeros(SHAPE), meta=dict(d["label"].meta))
    ValidateCTd(num_classes=3)({"image": d["image"], "label": lab1})


def test_trailing_singleton_4d_is_accepted(tmp_path, files):
    img, lab = _case()
    path = _save(tmp_path / "ct_4d1.nii.gz", img[..., None])
    d = _load({"image": path, "label": files["label"]})
    assert d["image"].shape == (*SHAPE, 1)
    assert ValidateCTd(num_classes=3)(d)["image"] is d["image"]
    # and EnsureChannelFirstd then gives the usual (1, H, W, D)
    assert EnsureChannelFirstd(["image", "label"])(d)["image"].shape == (1, *SHAPE)
    assert ValidateCT()(torch.zeros((*SHAPE, 1)) + 100) is not None  # no meta: trailing singleton accepted too


def test_not_3d(tmp_path):
    img2d = _save(tmp_path / "slice.nii.gz", np.full((12, 10), 100.0, np.float32))
    msg = _raises(lambda: ValidateCTd()(_load({"image": img2d})), img2d)
    assert "2D" in msg
    img4d = _save(tmp_path / "dyn.nii.gz", np.full((*SHAPE, 3), 100.0, np.float32))
    msg = _raises(lambda: ValidateCTd()(_load({"image": img4d})), img4d)
    assert "3 channels" in msg
    img5d = _save(tmp_path / "five.nii.gz", np.full((*SHAPE, 1, 1), 100.0, np.float32))
    msg = _raises(lambda: ValidateCTd()(_load({"image": img5d})), img5d)
    assert "squeeze_non_spatial_dims" in msg
    # applied after EnsureChannelFirstd by mistake
    d = EnsureChannelFirstd("image")(_load({"image": _save(tmp_path / "ok.nii.gz", _case()[0])}))
    msg = _raises(lambda: ValidateCTd()(d), "ok.nii.gz")
    assert "before EnsureChannelFirst" in msg
    # a numpy array with its meta dict (LoadImaged(image_only=False) style)
    _raises(lambda: ValidateCT()(np.zeros((4, 4)), img_meta={"filename_or_obj": "x/plain.nii"}), "x/plain.nii")


def test_label_shape_and_affine(tmp_path, files):
    img, lab = _case()
    small = _save(tmp_path / "small_seg.nii.gz", lab[:, :, :5])
    msg = _raises(lambda: ValidateCTd()(_load({"image": files["image"], "label": small})), small, files["image"])
    assert "(12, 10, 5)" in msg and "(12, 10, 6)" in msg
    moved = AFFINE.copy()
    moved[0, 3] += 0.01  # 10 micrometres off: a different grid
    shifted = _save(tmp_path / "shifted_seg.nii.gz", lab, moved)
    msg = _raises(lambda: ValidateCTd()(_load({"image": files["image"], "label": shifted})), shifted, files["image"])
    assert "affine" in msg
    close = AFFINE.copy()
    close[0, 3] += 1e-4  # within atol 1e-3 mm (float32 header rounding and the like)
    ok = _save(tmp_path / "close_seg.nii.gz", lab, close)
    ValidateCTd()(_load({"image": files["image"], "label": ok}))


def test_label_values(tmp_path, files):
    img, lab = _case()
    lab = lab.astype(np.float32)
    lab[0, 0, 0], lab[0, 0, 1] = 5, 7
    bad = _save(tmp_path / "bad_seg.nii.gz", lab)
    d = _load({"image": files["image"], "label": bad})
    msg = _raises(lambda: ValidateCTd(num_classes=3)(d), bad)
    assert re.search(r"values 5, 7 outside the label values \[0, 3\)", msg), msg
    ValidateCTd(num_classes=None)(d)  # non-negative integers are fine without num_classes
    lab[0, 0, 0], lab[0, 0, 1] = 0.5, -1
    frac = _save(tmp_path / "frac_seg.nii.gz", lab)
    msg = _raises(lambda: ValidateCTd(num_classes=None)(_load({"image": files["image"], "label": frac})), frac)
    assert "-1, 0.5" in msg
    lab[0, 0, 0], lab[0, 0, 1] = np.nan, np.nan
    nan = _save(tmp_path / "nan_seg.nii.gz", lab)
    msg = _raises(lambda: ValidateCTd(num_classes=3)(_load({"image": files["image"], "label": nan})), nan)
    assert "values nan outside" in msg


def test_intensities(tmp_path):
    air = _save(tmp_path / "air.nii.gz", np.full(SHAPE, -1000.0, np.float32))
    msg = _raises(lambda: ValidateCTd()(_load({"image": air})), air)
    assert "-500" in msg and "Hounsfield" in msg
    norm = _save(tmp_path / "normalised.nii.gz", np.random.rand(*SHAPE).astype(np.float32) - 600)
    _raises(lambda: ValidateCTd()(_load({"image": norm})), norm)
    ValidateCTd(min_max_hu=None)(_load({"image": norm}))
    img = _case()[0]
    img[1, 1, 1] = np.nan
    nan = _save(tmp_path / "nan.nii.gz", img)
    assert "NaN" in _raises(lambda: ValidateCTd()(_load({"image": nan})), nan)


def test_missing_and_unloaded(files):
    d = _load({"image": files["image"]})
    assert ValidateCTd()(d)["image"] is d["image"]  # inference item: no label
    msg = _raises(lambda: ValidateCTd(allow_missing_label=False)(d), files["image"])
    assert "no label" in msg
    _raises(lambda: ValidateCTd()(dict(files)), files["image"])  # before LoadImaged
    _raises(lambda: ValidateCTd()({"image": _load(files)["image"], "label": files["label"]}), files["label"])
    with pytest.raises(ValueError, match="no image key"):
        ValidateCTd()({"label": 1})


def _volume_pipeline(files, pixdim):
    keys = ["image", "label"]
    return [
        LoadImaged(keys),
        ValidateCTd(num_classes=3),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=pixdim, mode=("bilinear", "nearest")),
    ]


@pytest.mark.parametrize("by_label", [True, False])
def test_axial_slice_sampler_keeps_in_plane_spacing(files, by_label):
    set_determinism(0)
    keys = ["image", "label"]
    pixdim = (0.8, 0.75, 2.5)
    sampler = axial_slice_sampler(keys, 4, label_key="label", ratios=[0, 1, 1]) if by_label else None
    sampler = sampler or axial_slice_sampler(keys, 4)
    volume = Compose(_volume_pipeline(files, pixdim))(dict(files))
    out = Compose(_volume_pipeline(files, pixdim) + sampler)(dict(files))
    set_determinism(None)
    assert isinstance(out, list) and len(out) == 4
    h, w, depth = volume["image"].shape[1:]
    slices = {tuple(volume["image"][0, :, :, z].flatten()[:40].tolist()): z for z in range(depth)}
    for d in out:
        for k in keys:
            x = d[k]
            assert isinstance(x, MetaTensor) and x.shape == (1, h, w)
            np.testing.assert_allclose(x.pixdim.numpy(), pixdim[:2], atol=1e-6)
            np.testing.assert_allclose(x.affine[:2, :2].abs().numpy(), np.diag(pixdim[:2]), atol=1e-6)
        assert tuple(d["image"][0].flatten()[:40].tolist()) in slices  # a whole axial slice of the volume
        if by_label:
            assert d["label"].max() > 0  # ratios [0, 1, 1]: every slice crosses an organ


def test_axial_slice_sampler_needs_classes():
    with pytest.raises(ValueError, match="num_classes or ratios"):
        axial_slice_sampler("image", 2, label_key="label")
    with pytest.raises(ValueError, match="num_samples"):
        axial_slice_sampler("image", 0)


def test_resample_to_spacing_keeps_string_entries_and_equals_spacingd(tmp_path):
    """MONAI Label puts ``image_path`` (a string) in the data; MONAI's Spacingd calls ``.update`` on it."""
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.diag([0.7, 0.8, 3.0, 1])), path)
    load = [LoadImaged("image", image_only=True), EnsureChannelFirstd("image")]
    ours = Compose(load + [ResampleToSpacingd("image", pixdim=(1.0, 1.0, 2.5))])
    out = ours({"image": str(path), "image_path": str(path)})
    assert out["image_path"] == str(path)
    with pytest.raises(RuntimeError) as info:  # what MONAI's own Spacingd does with such data
        Compose(load + [Spacingd("image", pixdim=(1.0, 1.0, 2.5))])({"image": str(path), "image_path": str(path)})
    assert "update" in str(info.value.__cause__)
    ref = Compose(load + [Spacingd("image", pixdim=(1.0, 1.0, 2.5))])({"image": str(path)})
    torch.testing.assert_close(out["image"].as_tensor(), ref["image"].as_tensor())
    # inverted by Invertd like Spacingd
    out["pred"] = out["image"].clone()
    inv = Invertd("pred", transform=ours, orig_keys="image", nearest_interp=True)(out)
    assert inv["pred"].shape[1:] == (6, 5, 4)


def test_load_volume_names_a_truncated_file(tmp_path, files):
    """nibabel opens a truncated .nii.gz (the header is intact) and fails only on the voxels; LoadVolumed names it."""
    rng = np.random.default_rng(0)
    big = _save(tmp_path / "ct_big.nii.gz", rng.normal(0, 300, (64, 64, 32)).astype(np.float32))
    data = open(big, "rb").read()
    cut = tmp_path / "ct_cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    assert nib.load(str(cut)).shape == (64, 64, 32)  # the header still reads: the failure is lazy
    with pytest.raises(RuntimeError) as e:
        LoadVolumed(["image", "label"])({"image": str(cut), "label": files["label"]})
    assert str(cut) in str(e.value) and "cannot read" in str(e.value)
    assert isinstance(e.value.__cause__, Exception)  # the reader's own error stays chained
    with pytest.raises(RuntimeError, match=re.escape(str(cut))):
        LoadVolume()(str(cut))
    # a good case loads exactly as MONAI's LoadImaged does
    ours, theirs = LoadVolumed(["image", "label"])(dict(files)), _load(dict(files))
    for k in ("image", "label"):
        assert torch.equal(ours[k].as_tensor(), theirs[k].as_tensor())
        assert np.allclose(ours[k].affine, theirs[k].affine)
