"""The CLEF bundle through MONAI's bundle API on tiny synthetic CT: pretrain -> fine-tune -> evaluate -> infer, and bad
input named by file."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import verify_net_in_out

from monai_contrastive.networks import CLEFNet, CLEFSegNet

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "clef_ct")
FEATURES = [4, 8, 8, 16, 16, 4]
TINY = {
    "demo_kwargs": {"num_labelled": 8, "num_unlabelled": 2, "matrix": 48, "num_validation": 1, "num_test": 2},
    "spatial_size": [32, 32, 32],
    "features": FEATURES,
    "num_workers": 0,
    "amp": False,
    "device": "cpu",
}
PRETRAIN = {**TINY, "feature_channels": 8, "num_anchors": 16, "num_leaves": 128, "learning_rate": 0.003}
INFER = {k: TINY[k] for k in ("demo_kwargs", "spatial_size", "features", "amp", "device")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "clef_ct"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    return str(root)


def _record(trainer, key):
    values = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: values.append(float(e.state.output[key])))
    return values


def test_pretrain_finetune_evaluate_infer(bundle, workflow, tmp_path):
    torch.set_num_threads(2)
    # pretraining: 2 unlabelled volumes, 2 epochs of batch 1; all three terms logged, the decoding loss falls
    wf = workflow(bundle, ["pretrain.json"], **PRETRAIN, epochs=2)
    trainer = wf.parser.get_parsed_content("train#trainer")
    decoding = _record(trainer, "loss_decoding")
    equivariance = _record(trainer, "loss_equivariance")
    disc = _record(trainer, "loss_discriminativeness")
    wf.run()
    wf.finalize()
    assert trainer.state.iteration == 4 and len(decoding) == 4
    assert decoding[-1] < decoding[0]
    assert all(-1.0 <= v <= 1.0 for v in equivariance) and all(v >= 0.0 for v in disc)
    pretrained = torch.load(os.path.join(bundle, "models", "pretrain", "model.pt"), weights_only=True)
    CLEFNet(feature_channels=8, features=FEATURES).load_state_dict(pretrained)

    # fine-tuning from the CLEF backbone: fold 0 of the 6 labelled volumes (5 folds of 2, 1, 1, 1, 1: 4 train)
    wf = workflow(bundle, ["train.json"], **TINY, epochs=1, init="clef")
    net = wf.parser.get_parsed_content("network")
    for k, v in net.backbone.state_dict().items():
        torch.testing.assert_close(v, pretrained[f"backbone.{k}"])  # backbone transferred
    head_before = {k: v.clone() for k, v in net.head.state_dict().items()}
    n_train = len(wf.parser.get_parsed_content("train#dataset"))
    assert n_train == 4 and len(wf.parser.get_parsed_content("validate#dataset")) == 2
    trainer = wf.parser.get_parsed_content("train#trainer")
    wf.run()
    wf.finalize()
    assert trainer.state.iteration == n_train
    assert any(not torch.equal(head_before[k], v) for k, v in net.head.state_dict().items())
    best = os.path.join(bundle, "models", "model.pt")
    CLEFSegNet(out_channels=13, features=FEATURES).load_state_dict(torch.load(best, weights_only=True))
    with open(best + ".json") as f:
        info = json.load(f)
    assert info["metric_name"] == "val_loss" and info["metric"] > 0

    # evaluation on the 2 test cases: tables shaped like the paper's, efficiency
    wf = workflow(bundle, ["train.json", "evaluate.json"], workflow_type="eval", **TINY, init="clef")
    wf.run()
    wf.finalize()
    out = os.path.join(bundle, "eval")
    with open(os.path.join(out, "seg_metrics.json")) as f:
        assert json.load(f)["n_cases"] == 2
    tables = open(os.path.join(out, "flare_tables.md")).read()
    assert "| Liver_DSC |" in tables and "| LK_NSD |" in tables and "## Phase:" in tables
    with open(os.path.join(out, "efficiency.json")) as f:
        eff = json.load(f)
    assert eff["cases"] == 2 and eff["seconds_per_case"]["median"] > 0 and eff["peak_rss_mib"] > 100

    # inference: a NIfTI (LPS/RAS as stored) and a DICOM series folder; labels in each input's own grid
    from ..helpers import write_ct_dicom_series

    src = os.path.join(bundle, "demo_data", "imagesTs")
    inputs = tmp_path / "in"
    inputs.mkdir()
    name = sorted(os.listdir(src))[0]
    shutil.copy(os.path.join(src, name), inputs / name)
    write_ct_dicom_series(str(inputs / name), str(inputs / "SERIES"))
    out_dir = tmp_path / "out"
    wf = workflow(bundle, ["inference.json"], "infer", **INFER, input_dir=str(inputs), output_dir=str(out_dir))
    wf.run()
    wf.finalize()
    img = nib.load(str(inputs / name))
    pred = nib.load(str(out_dir / f"{name[: -len('.nii.gz')]}_seg.nii.gz"))
    assert pred.shape == img.shape
    np.testing.assert_allclose(pred.affine, img.affine, atol=1e-4)
    labels = np.unique(np.asarray(pred.dataobj))
    assert labels.min() >= 0 and labels.max() < 14
    series = [f for f in os.listdir(out_dir) if f != os.path.basename(str(pred.get_filename()))]
    assert len(series) == 1
    dcm_pred = nib.load(str(out_dir / series[0]))
    assert sorted(dcm_pred.shape) == sorted(img.shape)
    # the same world grid: the voxel spacings and the world position of the volume's centre agree
    np.testing.assert_allclose(
        sorted(nib.affines.voxel_sizes(dcm_pred.affine)), sorted(nib.affines.voxel_sizes(img.affine)), atol=1e-3
    )
    centre = lambda im: im.affine @ np.r_[(np.array(im.shape) - 1) / 2.0, 1.0]  # noqa: E731
    c_img, c_dcm = centre(img)[:3], centre(dcm_pred)[:3]
    np.testing.assert_allclose(np.abs(c_img), np.abs(c_dcm), atol=1e-2)


def test_verify_net_in_out(bundle):
    """As zoo CI runs it (n=1): 32^3 keeps the bottleneck's instance norm above 1 voxel."""
    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        config_file=os.path.join(bundle, "configs", "inference.json"),
        n=1,
        device="cpu",
        bundle_root=bundle,
        features=FEATURES,
    )


def _write(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _chain(fn, *args) -> str:
    with pytest.raises(Exception) as info:
        fn(*args)
    e, texts = info.value, []
    while e is not None:
        texts.append(str(e))
        e = e.__cause__ or e.__context__
    return "\n".join(texts)


def test_bad_input_is_named(bundle, workflow, tmp_path):
    """The bundle's own pipelines: no voxel above -500 HU, a 2D or a 4D volume, a label on another grid, a truncated
    .nii.gz: each stops with an error naming the file."""
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    img = np.full((40, 40, 12), -1000, np.int16)
    img[8:32, 8:32] = 40
    _write(tmp_path / "img.nii.gz", img, affine)
    _write(tmp_path / "air.nii.gz", np.full((40, 40, 12), -1000, np.int16), affine)
    _write(tmp_path / "flat2d.nii.gz", img[:, :, 0], affine)
    _write(tmp_path / "series4d.nii.gz", np.stack([img, img], -1), affine)
    moved = affine.copy()
    moved[0, 3] = 4.0
    _write(tmp_path / "lab_moved.nii.gz", np.zeros((40, 40, 12), np.uint8), moved)
    whole = (tmp_path / "img.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    wf = workflow(bundle, ["inference.json"], "infer", **INFER, input_dir=str(tmp_path))
    pre = wf.parser.get_parsed_content("preprocessing")
    for name, message in [
        ("air.nii.gz", "no voxel above -500"),
        ("flat2d.nii.gz", "3D"),
        ("series4d.nii.gz", "2 channels"),
        ("cut.nii.gz", "cannot read"),
    ]:
        text = _chain(pre, {"image": str(tmp_path / name)})
        assert name in text and message in text, text
    wf = workflow(bundle, ["train.json"], **TINY)
    pre = wf.parser.get_parsed_content("validate#preprocessing")
    text = _chain(pre, {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab_moved.nii.gz")})
    assert "lab_moved.nii.gz" in text and "different affines" in text, text
