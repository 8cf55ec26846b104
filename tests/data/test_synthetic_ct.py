"""Tests of the synthetic multi-organ CT demo data (``monai_contrastive.data.synthetic_ct``)."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged
from scipy.ndimage import binary_erosion

from monai_contrastive.data import DEMO_GENERATORS, generate_ct_demo, resolve_datalist
from monai_contrastive.data.ct_labels import CONTRAST_PHASES, FLARE22_ORGANS, flare22_channel_def
from monai_contrastive.data.synthetic_ct import (
    IN_PLANE_SPACING_RANGE,
    MIN_ORGAN_VOXELS,
    ORIENTATIONS,
    SLICE_SPACING_RANGE,
)

OLD_NS = 1_000_000_000_000_000_000  # 2001-09-09: an mtime no generation can produce
LABELLED_KEYS = ("training", "validation", "testing")
ORGAN = {name: i + 1 for i, name in enumerate(FLARE22_ORGANS)}


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _labelled(datalist: dict) -> list[dict]:
    return [it for key in LABELLED_KEYS for it in datalist[key]]


def _case_files(root: str) -> list[str]:
    return sorted(
        os.path.join(root, folder, name)
        for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "imagesUn")
        if os.path.isdir(os.path.join(root, folder))
        for name in os.listdir(os.path.join(root, folder))
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    """8 labelled (4 / 2 / 2) + 4 unlabelled cases at matrix 64: every phase twice among the labelled cases."""
    out = tmp_path_factory.mktemp("ct_demo")
    return generate_ct_demo(str(out), num_labelled=8, num_unlabelled=4, matrix=64, num_validation=2, num_test=2)


@pytest.fixture(scope="module")
def volumes(demo) -> dict[str, dict]:
    """Every case loaded with nibabel: HU (scaling applied), label, affine, raw header scaling."""
    root = os.path.dirname(demo)
    datalist = _read(demo)
    out = {}
    for key in (*LABELLED_KEYS, "unlabelled"):
        for item in datalist[key]:
            image = nib.load(os.path.join(root, item["image"]))
            entry = {"item": item, "image": image, "hu": image.get_fdata(dtype=np.float32)}
            if "label" in item:
                entry["label_img"] = nib.load(os.path.join(root, item["label"]))
                entry["label"] = np.asarray(entry["label_img"].dataobj)
            out[item["case"]] = entry
    return out


def test_datalist_structure(demo):
    root = os.path.dirname(demo)
    datalist = _read(demo)
    assert datalist["labels"] == flare22_channel_def()
    assert datalist["modality"] == {"0": "CT"}
    assert [len(datalist[k]) for k in (*LABELLED_KEYS, "unlabelled")] == [4, 2, 2, 4]
    assert (datalist["numTraining"], datalist["numValidation"], datalist["numTest"], datalist["numUnlabelled"]) == (
        4,
        2,
        2,
        4,
    )
    folders = {"training": ("imagesTr", "labelsTr"), "validation": ("imagesTr", "labelsTr")}
    folders.update(testing=("imagesTs", "labelsTs"), unlabelled=("imagesUn", None))
    cases = []
    for key, (image_dir, label_dir) in folders.items():
        for item in datalist[key]:
            expected = {"image", "phase", "case", "spacing"} | ({"label"} if label_dir else set())
            assert set(item) == expected, (key, item)
            assert item["image"] == f"{image_dir}/{item['case']}.nii.gz"
            if label_dir:
                assert item["label"] == f"{label_dir}/{item['case']}.nii.gz"
            assert item["phase"] in CONTRAST_PHASES
            assert len(item["spacing"]) == 3 and all(isinstance(s, float) for s in item["spacing"])
            for k in ("image", "label"):
                if k in item:
                    assert os.path.isfile(os.path.join(root, item[k]))
            cases.append(item["case"])
    assert len(set(cases)) == len(cases)
    # every phase twice among the 8 labelled cases (balanced blocks of 4)
    phases = [it["phase"] for it in _labelled(datalist)]
    assert sorted(phases) == sorted(CONTRAST_PHASES * 2)
    # MONAI resolves the relative paths against the JSON's folder
    for key in (*LABELLED_KEYS, "unlabelled"):
        items = load_decathlon_datalist(demo, data_list_key=key, base_dir=root)
        assert len(items) == len(datalist[key])
        for item in items:
            assert os.path.isabs(item["image"]) and os.path.isfile(item["image"])
            assert ("label" in item) == (key != "unlabelled")
            if "label" in item:
                assert os.path.isfile(item["label"])
            assert isinstance(item["spacing"], list) and item["phase"] in CONTRAST_PHASES


def test_registered_demo(demo):
    assert DEMO_GENERATORS["multiorgan_ct"] == "monai_contrastive.data.synthetic_ct.generate_ct_demo"
    kwargs = dict(num_labelled=8, num_unlabelled=4, matrix=64, num_validation=2, num_test=2)
    mtime = os.stat(demo).st_mtime_ns
    assert resolve_datalist(None, "multiorgan_ct", os.path.dirname(demo), **kwargs) == demo
    assert os.stat(demo).st_mtime_ns == mtime  # served from the cache


def test_nibabel_and_itk_read_the_same_hu(demo, volumes):
    loader = LoadImaged(keys=("image", "label"), reader="ITKReader", image_only=False, allow_missing_keys=True)
    root = os.path.dirname(demo)
    storages = set()
    for entry in volumes.values():
        item, image = entry["item"], entry["image"]
        assert image.get_data_dtype() == np.int16
        offset = image.dataobj.inter == -1024.0
        storages.add(bool(offset))
        if offset:  # stored value = HU + 1024, scl_slope 1, scl_inter -1024
            assert image.dataobj.slope == 1.0
            stored = np.asarray(image.dataobj.get_unscaled())
            np.testing.assert_array_equal(stored.astype(np.float32) - 1024.0, entry["hu"])
            assert stored.min() >= 0
        assert entry["hu"].min() >= -1024 and entry["hu"].max() <= 3071
        data = loader({k: os.path.join(root, item[k]) for k in ("image", "label") if k in item})
        np.testing.assert_array_equal(np.asarray(data["image"]), entry["hu"])
        np.testing.assert_allclose(np.asarray(data["image"].affine), image.affine, atol=1e-4)
        if "label" in item:
            np.testing.assert_array_equal(np.asarray(data["label"]), entry["label"])
    assert storages == {True, False}  # both conventions occur, so a reader ignoring scl_slope / scl_inter fails


def test_label_geometry_spacing_and_orientation(volumes):
    codes = set()
    for entry in volumes.values():
        item, image = entry["item"], entry["image"]
        spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
        np.testing.assert_allclose(spacing, item["spacing"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(image.header.get_zooms(), item["spacing"], rtol=0, atol=1e-6)
        assert item["spacing"][0] == item["spacing"][1]
        assert IN_PLANE_SPACING_RANGE[0] <= item["spacing"][0] <= IN_PLANE_SPACING_RANGE[1]
        assert SLICE_SPACING_RANGE[0] <= item["spacing"][2] <= SLICE_SPACING_RANGE[1]
        assert image.shape[:2] == (64, 64) and image.shape[2] >= 10
        code = "".join(nib.aff2axcodes(image.affine))
        assert code in ORIENTATIONS
        codes.add(code)
        if "label" in entry:
            label_img = entry["label_img"]
            assert label_img.get_data_dtype() == np.uint8
            assert label_img.shape == image.shape
            np.testing.assert_array_equal(label_img.affine, image.affine)
            assert entry["label"].max() <= len(FLARE22_ORGANS)
    assert len(codes) >= 2


def test_every_organ_in_every_labelled_case(volumes):
    for case, entry in volumes.items():
        if "label" not in entry:
            continue
        counts = np.bincount(entry["label"].ravel(), minlength=len(FLARE22_ORGANS) + 1)
        assert counts[1:].min() >= MIN_ORGAN_VOXELS, (case, dict(zip(FLARE22_ORGANS, counts[1:].tolist())))


def _world_centroid(entry: dict, organ: str) -> np.ndarray:
    index = np.argwhere(entry["label"] == ORGAN[organ]).mean(0)
    return nib.affines.apply_affine(entry["image"].affine, index)  # RAS: +x patient's right, +y anterior


def test_layout_in_world_coordinates(volumes):
    """Whatever the storage orientation, the anatomy is where it belongs in RAS world coordinates."""
    for case, entry in volumes.items():
        if "label" not in entry:
            continue
        c = {organ: _world_centroid(entry, organ) for organ in FLARE22_ORGANS}
        assert c["liver"][0] > c["spleen"][0], case  # liver on the patient's right
        assert c["right kidney"][0] > c["aorta"][0] > c["left kidney"][0], case
        assert c["right adrenal gland"][0] > c["left adrenal gland"][0], case
        assert c["inferior vena cava"][0] > c["aorta"][0], case
        assert c["stomach"][0] < c["liver"][0] and c["stomach"][1] > c["spleen"][1], case  # left-anterior
        assert c["gallbladder"][2] < c["liver"][2], case
        assert c["esophagus"][2] > c["pancreas"][2], case
        assert c["right adrenal gland"][2] > c["right kidney"][2], case


def _organ_means(volumes: dict, organ: str, core: bool = False) -> dict[str, float]:
    """Mean HU of an organ per phase over the labelled cases (``core``: in-plane eroded mask when non-empty)."""
    per_phase = defaultdict(list)
    for entry in volumes.values():
        if "label" not in entry:
            continue
        mask = entry["label"] == ORGAN[organ]
        if core:
            eroded = binary_erosion(mask, structure=np.ones((3, 3, 1), dtype=bool))
            mask = eroded if eroded.sum() >= 3 else mask
        per_phase[entry["item"]["phase"]].append(float(entry["hu"][mask].mean()))
    return {phase: float(np.mean(v)) for phase, v in per_phase.items()}


def test_contrast_phases_change_hu(volumes):
    aorta = _organ_means(volumes, "aorta")
    assert aorta["arterial"] > aorta["portal_venous"] > aorta["non_contrast"]
    assert aorta["arterial"] > 200 and aorta["non_contrast"] < 60
    for kidney in ("right kidney", "left kidney"):
        hu = _organ_means(volumes, kidney, core=True)
        assert min(hu["arterial"], hu["portal_venous"]) > hu["non_contrast"] + 60
    liver = _organ_means(volumes, "liver", core=True)
    assert liver["portal_venous"] > liver["non_contrast"] + 25
    assert 40 < liver["non_contrast"] < 75
    gallbladder = _organ_means(volumes, "gallbladder")
    assert max(gallbladder.values()) - min(gallbladder.values()) < 30  # bile does not enhance
    assert all(-40 < v < 40 for v in gallbladder.values())


def test_body_tissues_and_air(volumes):
    for case, entry in volumes.items():
        hu = entry["hu"]
        # air outside the body: the volume's corners
        corners = np.concatenate([hu[:4, :4].ravel(), hu[-4:, :4].ravel(), hu[:4, -4:].ravel(), hu[-4:, -4:].ravel()])
        assert abs(corners.mean() + 1000.0) < 15.0, case
        assert np.mean((hu > -200) & (hu < -50)) > 0.05, case  # subcutaneous and visceral fat
        assert np.mean(hu > 150) > 0.005, case  # bone (and enhanced vessels)
        assert hu.max() > 500, case  # cortical bone
        # noise: SD of the air far from the body (clipped at -1024, so a little below the image noise SD)
        assert 4.0 < corners.std() < 30.0, case


def test_deterministic_cached_and_stale_files_removed(tmp_path):
    kwargs = dict(num_labelled=3, num_unlabelled=2, matrix=48, num_validation=1, num_test=1)
    first = generate_ct_demo(str(tmp_path / "a"), seed=3, **kwargs)
    second = generate_ct_demo(str(tmp_path / "b"), seed=3, **kwargs)
    files_a, files_b = _case_files(str(tmp_path / "a")), _case_files(str(tmp_path / "b"))
    assert [os.path.relpath(p, tmp_path / "a") for p in files_a] == [
        os.path.relpath(p, tmp_path / "b") for p in files_b
    ]
    assert len(files_a) == 3 * 2 + 2
    for pa, pb in zip(files_a, files_b):
        np.testing.assert_array_equal(np.asarray(nib.load(pa).dataobj), np.asarray(nib.load(pb).dataobj))
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            assert fa.read() == fb.read()  # gzip written with mtime 0: byte-identical
    assert _read(first) == _read(second)
    other = generate_ct_demo(str(tmp_path / "c"), seed=4, **kwargs)
    a0 = np.asarray(nib.load(files_a[0]).dataobj)
    c0 = np.asarray(nib.load(_case_files(os.path.dirname(other))[0]).dataobj)
    assert a0.shape != c0.shape or not np.array_equal(a0, c0)

    # cached: a second call with the same parameters rewrites nothing
    paths = [first, os.path.join(os.path.dirname(first), "demo_params.json"), *files_a]
    for p in paths:
        os.utime(p, ns=(OLD_NS, OLD_NS))
    assert generate_ct_demo(str(tmp_path / "a"), seed=3, **kwargs) == first
    assert all(os.stat(p).st_mtime_ns == OLD_NS for p in paths)

    # other parameters regenerate and remove the files the new dataset lacks; case i does not depend on the counts
    case1 = np.asarray(nib.load(str(tmp_path / "a" / "imagesTr" / "CTL0001.nii.gz")).dataobj)
    smaller = generate_ct_demo(
        str(tmp_path / "a"), seed=3, num_labelled=2, num_unlabelled=0, matrix=48, num_validation=0, num_test=1
    )
    datalist = _read(smaller)
    assert [len(datalist[k]) for k in (*LABELLED_KEYS, "unlabelled")] == [1, 0, 1, 0]
    remaining = {os.path.relpath(p, tmp_path / "a") for p in _case_files(str(tmp_path / "a"))}
    assert remaining == {
        "imagesTr/CTL0001.nii.gz",
        "labelsTr/CTL0001.nii.gz",
        "imagesTs/CTL0002.nii.gz",
        "labelsTs/CTL0002.nii.gz",
    }
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(tmp_path / "a" / "imagesTr" / "CTL0001.nii.gz")).dataobj), case1
    )
    # overwrite regenerates even with matching parameters
    datalist_path = tmp_path / "a" / "dataset.json"
    os.utime(datalist_path, ns=(OLD_NS, OLD_NS))
    generate_ct_demo(
        str(tmp_path / "a"),
        seed=3,
        num_labelled=2,
        num_unlabelled=0,
        matrix=48,
        num_validation=0,
        num_test=1,
        overwrite=True,
    )
    assert os.stat(datalist_path).st_mtime_ns != OLD_NS


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_labelled": 0}, "num_labelled"),
        ({"num_labelled": 5, "num_validation": 3, "num_test": 2}, "at least one case is left for training"),
        ({"num_unlabelled": -1}, "num_unlabelled"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"matrix": 32}, "matrix"),
        ({"matrix": 1024}, "matrix"),
        ({"matrix": True}, "matrix"),
        ({"num_validation": -1}, "num_validation"),
        ({"num_test": "2"}, "num_test"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_ct_demo(str(tmp_path / "x"), **kwargs)
    assert not os.path.exists(tmp_path / "x")


def test_bad_output_dir():
    with pytest.raises(TypeError, match="output_dir"):
        generate_ct_demo(None)  # type: ignore[arg-type]
