"""The LRC multi-organ CT bundle in a real MONAI Label server (monaibundle app): /info, /infer, /train."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_contrastive.data.ct_labels import FLARE22_ORGANS

from ..monailabel_harness import copy_studies, monailabel_server
from .conftest import _workflow

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "lrc_multiorgan_ct")
NAME = "lrc_multiorgan_ct"
SETTINGS = {
    "demo_kwargs": {"num_labelled": 7, "num_unlabelled": 1, "matrix": 64, "num_validation": 1, "num_test": 2},
    "patch_size": 64,
    "batch_size": 2,
    "slices_per_volume": 4,
    "num_workers": 0,
    "amp": False,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def trained(ml_python, tmp_path_factory):
    """The bundle trained briefly on tiny synthetic CT, shipped as a zoo bundle is: models/model.pt only."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("ml") / NAME
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    wf = _workflow(str(root), ["train.json"], **SETTINGS, epochs=30, val_interval=30, learning_rate=0.003)
    wf.run()
    wf.finalize()
    os.remove(root / "models" / "checkpoint_last.pt")
    # MONAI Label runs inference.json as it is: give it the patch size the model was trained with, as a user would
    path = root / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["patch_size"] = SETTINGS["patch_size"]
    path.write_text(json.dumps(config, indent=4))
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


@pytest.mark.monailabel
def test_monailabel_info_infer_train(trained, ml_python, tmp_path):
    studies = tmp_path / "studies"
    ids = copy_studies(trained / "demo_data", studies)

    # the bundle's own inference on the first study, for comparison
    own_dir = tmp_path / "own"
    infer_settings = {k: SETTINGS[k] for k in ("demo_kwargs", "amp", "device")}
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(studies / f"{ids[0]}.nii.gz", single)
    wf = _workflow(
        str(trained), ["inference.json"], "infer", **infer_settings, input_dir=str(single), output_dir=str(own_dir)
    )
    wf.run()
    wf.finalize()
    own = np.asarray(nib.load(str(own_dir / f"{ids[0]}_seg.nii.gz")).dataobj).astype(int)

    with monailabel_server(str(trained), str(studies), NAME, tmp_path / "server", python=ml_python) as client:
        info = client.info()
        model = info["models"][NAME]
        assert model["type"] == "segmentation", model
        assert model["labels"] == {organ: i + 1 for i, organ in enumerate(FLARE22_ORGANS)}, model["labels"]

        body, headers = client.infer(NAME, ids[0])
        out = tmp_path / "pred.nii.gz"
        out.write_bytes(body)
        pred_img = nib.load(str(out))
        study = nib.load(str(studies / f"{ids[0]}.nii.gz"))
        assert pred_img.shape == study.shape, (pred_img.shape, headers)
        np.testing.assert_allclose(pred_img.affine, study.affine, atol=1e-4)
        pred = np.asarray(pred_img.dataobj).astype(int)
        # the server returns what the bundle itself computes on the same file
        assert (pred == own).mean() > 0.99
        # and the organs sit where the ground truth has them (the big ones, for a briefly trained model)
        gt = np.asarray(nib.load(str(studies / "labels" / "final" / f"{ids[0]}.nii.gz")).dataobj).astype(int)
        for organ in ("liver", "spleen", "stomach"):
            c = FLARE22_ORGANS.index(organ) + 1
            assert _dice(pred == c, gt == c) > 0.5, organ

        # /train on the labelled studies (one for training, one for validation) rewrites models/model.pt
        served = Path(client.bundle_dir) / "models" / "model.pt"
        before = _sha256(served)
        client.train(NAME, {"max_epochs": 1, "val_split": 0.5, "pretrained": True}, timeout=900)
        assert _sha256(served) != before
        log = Path(client.log_path).read_text(errors="replace")
        assert "Total Records for Training: 1" in log and "Total Records for Validation: 1" in log
        assert "val_mean_dice" in log
        # a second /train trains again from models/model.pt (MONAI Label adds a CheckpointLoader of it): the first
        # run's checkpoint_last.pt is neither resumed (a finished run: nothing trained) nor refused (other labels)
        before = _sha256(served)
        client.train(NAME, {"max_epochs": 1, "val_split": 0.5, "pretrained": True}, timeout=900)
        assert _sha256(served) != before
        assert (served.parent / "checkpoint_last.previous.pt").is_file()
        assert Path(client.log_path).read_text(errors="replace").count("val_mean_dice") > log.count("val_mean_dice")
        body, _ = client.infer(NAME, ids[1])
        out.write_bytes(body)
        assert nib.load(str(out)).shape == nib.load(str(studies / f"{ids[1]}.nii.gz")).shape
