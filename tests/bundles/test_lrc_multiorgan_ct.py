"""The LRC multi-organ CT bundle through MONAI's bundle API on tiny synthetic CT: train, resume, evaluate, infer."""

from __future__ import annotations

import glob
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import verify_net_in_out

from monai_contrastive.networks import GlobalLocalUNet

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "lrc_multiorgan_ct")

TINY = {
    "demo_kwargs": {"num_labelled": 7, "num_unlabelled": 1, "matrix": 48, "num_validation": 2, "num_test": 2},
    "num_train_volumes": 2,
    "patch_size": 32,
    "batch_size": 2,
    "slices_per_volume": 2,
    "num_workers": 0,
    "val_sw_batch_size": 32,
    "val_interval": 1,
    "amp": False,
    "device": "cpu",
}
INFER = {k: TINY[k] for k in ("demo_kwargs", "patch_size", "amp", "device")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "lrc_multiorgan_ct"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    return str(root)


def test_train_resume_evaluate_infer(bundle, workflow, tmp_path):
    torch.set_num_threads(2)
    wf = workflow(bundle, ["train.json"], **TINY, epochs=1)
    assert len(wf.parser.get_parsed_content("train#dataset")) == 2  # the few-label subset
    wf.run()
    ckpt = os.path.join(bundle, "models", "checkpoint_last.pt")
    best = os.path.join(bundle, "models", "model.pt")
    assert torch.load(ckpt, weights_only=False)["trainer"]["iteration"] == 1
    # the served model is a plain state dict of the network (model zoo, MONAI Label), its metrics beside it
    state = torch.load(best, weights_only=True)
    net = GlobalLocalUNet(2, 1, 14)
    net.load_state_dict(state)
    with open(best + ".json") as f:
        info = json.load(f)
    assert info["metric_name"] == "val_mean_dice" and 0.0 <= info["metric"] <= 1.0
    with open(os.path.join(bundle, "models", "val_metrics.json")) as f:
        assert "val_mean_dice" in json.load(f)["last_validation"]
    wf.finalize()

    # resume: the same command with more epochs continues at iteration 2
    wf = workflow(bundle, ["train.json"], **TINY, epochs=2)
    trainer = wf.parser.get_parsed_content("train#trainer")
    started = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration))
    wf.run()
    assert started == [2] and trainer.state.iteration == 2
    wf.finalize()

    # evaluation on the test split, on each case's original grid
    wf = workflow(bundle, ["train.json", "evaluate.json"], workflow_type="eval", **TINY)
    wf.run()
    with open(os.path.join(bundle, "eval", "seg_metrics.json")) as f:
        report = json.load(f)
    assert report["n_cases"] == 2
    assert os.path.isfile(os.path.join(bundle, "eval", "seg_overlay.png"))
    wf.finalize()

    # inference on a folder of volumes in their own orientation and spacing: labels in the input's space
    src = os.path.join(bundle, "demo_data", "imagesTs")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in sorted(os.listdir(src))[:2]:
        shutil.copy(os.path.join(src, name), inputs / name)
    out_dir = tmp_path / "out"
    wf = workflow(bundle, ["inference.json"], "infer", **INFER, input_dir=str(inputs), output_dir=str(out_dir))
    wf.run()
    wf.finalize()
    for name in sorted(os.listdir(inputs)):
        img = nib.load(str(inputs / name))
        stem = name[: -len(".nii.gz")]
        pred = nib.load(str(out_dir / f"{stem}_seg.nii.gz"))
        assert pred.shape == img.shape
        np.testing.assert_allclose(pred.affine, img.affine, atol=1e-4)
        assert nib.aff2axcodes(pred.affine) == nib.aff2axcodes(img.affine)
        labels = np.unique(np.asarray(pred.dataobj))
        assert labels.min() >= 0 and labels.max() < 14


def test_verify_net_in_out(bundle):
    """As zoo CI runs it (n=1): the metadata's 32*n keeps the bottleneck's instance norm above 1 x 1."""
    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        config_file=os.path.join(bundle, "configs", "inference.json"),
        n=1,
        device="cpu",
        bundle_root=bundle,
    )


def test_pretrained_whole_network_weights_are_loaded(bundle, workflow, tmp_path):
    torch.manual_seed(3)
    ref = GlobalLocalUNet(2, 1, 14)
    torch.save(ref.state_dict(), tmp_path / "init.pt")
    wf = workflow(bundle, ["train.json"], **TINY, epochs=1, pretrained_path=str(tmp_path / "init.pt"))
    net = wf.parser.get_parsed_content("network")
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
    wf.finalize()


def _write(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_bad_volumes_are_named(bundle, workflow, tmp_path):
    """A label value outside channel_def, a 2D image and a truncated .nii.gz stop with the file named."""
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    img = np.full((40, 40, 12), -1000, np.int16)
    img[8:32, 8:32] = 40
    good = np.zeros((40, 40, 12), np.uint8)
    bad = good.copy()
    bad[20, 20, 5] = 17
    _write(tmp_path / "img.nii.gz", img, affine)
    _write(tmp_path / "lab_bad.nii.gz", bad, affine)
    _write(tmp_path / "img2d.nii.gz", img[:, :, 0], affine)
    _write(tmp_path / "lab_good.nii.gz", good, affine)
    noisy = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 12)).astype(np.int16)
    _write(tmp_path / "img_full.nii.gz", noisy, affine)
    whole = (tmp_path / "img_full.nii.gz").read_bytes()
    (tmp_path / "img_cut.nii.gz").write_bytes(whole[: len(whole) // 2])  # header intact, voxels cut short
    for image, label, message in [
        ("img_cut.nii.gz", "lab_good.nii.gz", "img_cut.nii.gz"),
        ("img.nii.gz", "lab_bad.nii.gz", "lab_bad.nii.gz"),
        ("img2d.nii.gz", "lab_good.nii.gz", "img2d.nii.gz"),
    ]:
        datalist = {
            "training": [{"image": image, "label": label}] * 2,
            "validation": [{"image": "img.nii.gz", "label": "lab_good.nii.gz"}],
        }
        (tmp_path / "dataset.json").write_text(json.dumps(datalist))
        wf = workflow(bundle, ["train.json"], **{**TINY, "num_train_volumes": None}, dataset_dir=str(tmp_path))
        with pytest.raises(Exception) as info:
            wf.parser.get_parsed_content("train#dataset")
        chain, e = [], info.value
        while e is not None:
            chain.append(str(e))
            e = e.__cause__ or e.__context__
        assert any(message in m for m in chain), chain


def test_every_config_loads_volumes_with_named_errors(bundle):
    """Plain LoadImaged does not name a truncated .nii.gz (nibabel fails lazily): every config uses LoadVolumed."""
    configs = sorted(glob.glob(os.path.join(bundle, "configs", "*.json")))
    loaders = {}
    for path in configs:
        text = open(path).read()
        assert '"LoadImaged"' not in text, f"{path} loads with plain LoadImaged"
        loaders[os.path.basename(path)] = text.count("monai_contrastive.transforms.ct.LoadVolumed")
    for name in ("train.json", "inference.json", "pretrain_common.json"):
        assert loaders[name] >= 1, loaders


def test_dicom_series_input_gives_the_nifti_prediction(workflow, tmp_path):
    """A 12-bit DICOM CT series (suffix-less files, RescaleIntercept) in the input folder is one volume; its label
    map, written in the series' own voxel order, equals the prediction on the same volume as NIfTI, in world space."""
    from ..helpers import write_ct_dicom_series

    root = tmp_path / "lrc_multiorgan_ct"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(GlobalLocalUNet(2, 1, 14).state_dict(), root / "models" / "model.pt")
    affine = np.array([[-0.8, 0, 0, 20.0], [0, -0.8, 0, 30.0], [0, 0, 2.5, -100.0], [0, 0, 0, 1]])
    hu = np.full((48, 40, 10), -1000, np.int16)
    hu[6:42, 5:35] = 30
    hu[10:24, 10:22, 2:8] = 150
    hu[28:38, 20:30, 1:9] = 60
    nii, dcm = tmp_path / "in_nii", tmp_path / "in_dcm"
    nii.mkdir()
    _write(nii / "case.nii.gz", hu, affine)
    write_ct_dicom_series(str(nii / "case.nii.gz"), str(dcm / "CASE_SERIES"))
    preds = {}
    for name, folder in (("nii", nii), ("dcm", dcm)):
        out = tmp_path / f"out_{name}"
        wf = workflow(str(root), ["inference.json"], "infer", **INFER, input_dir=str(folder), output_dir=str(out))
        wf.run()
        wf.finalize()
        files = sorted(out.glob("*_seg.nii.gz"))
        assert [f.name for f in files] == [("case" if name == "nii" else "CASE_SERIES") + "_seg.nii.gz"]
        preds[name] = nib.as_closest_canonical(nib.load(str(files[0])))
    np.testing.assert_allclose(preds["nii"].affine, preds["dcm"].affine, atol=1e-3)
    a, b = np.asarray(preds["nii"].dataobj), np.asarray(preds["dcm"].dataobj)
    assert a.shape == b.shape and len(np.unique(a)) > 1
    assert (a == b).mean() > 0.999
