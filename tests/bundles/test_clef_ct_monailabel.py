"""The CLEF bundle in a real MONAI Label server (monaibundle app): /info, /infer, /train (runs with CI=true, when the
MONAI Label virtualenv may be built; see :mod:`tests.monailabel_harness`)."""

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
from .test_clef_ct import INFER, TINY

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "clef_ct")
NAME = "clef_ct"


@pytest.fixture(scope="module")
def trained(ml_python, tmp_path_factory):
    """The bundle fine-tuned briefly from random init on tiny synthetic CT, shipped as a zoo bundle is: models/model.pt
    only, inference.json set to the sizes it was trained with (MONAI Label runs the config as it is)."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("ml") / NAME
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    wf = _workflow(str(root), ["train.json"], **TINY, epochs=2)
    wf.run()
    wf.finalize()
    os.remove(root / "models" / "checkpoint_last.pt")
    for config in ("inference.json", "train.json"):
        path = root / "configs" / config
        content = json.loads(path.read_text())
        content.update(spatial_size=TINY["spatial_size"], features=TINY["features"], num_workers=0)
        path.write_text(json.dumps(content, indent=4))
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.monailabel
def test_monailabel_info_infer_train(trained, ml_python, tmp_path):
    studies = tmp_path / "studies"
    ids = copy_studies(trained / "demo_data", studies)
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(studies / f"{ids[0]}.nii.gz", single)
    own_dir = tmp_path / "own"
    settings = {k: INFER[k] for k in ("demo_kwargs", "amp", "device")}
    wf = _workflow(
        str(trained), ["inference.json"], "infer", **settings, input_dir=str(single), output_dir=str(own_dir)
    )
    wf.run()
    wf.finalize()
    own = np.asarray(nib.load(str(own_dir / f"{ids[0]}_seg.nii.gz")).dataobj).astype(int)

    with monailabel_server(str(trained), str(studies), NAME, tmp_path / "server", python=ml_python) as client:
        model = client.info()["models"][NAME]
        assert model["type"] == "segmentation", model
        assert model["labels"] == {organ: i + 1 for i, organ in enumerate(FLARE22_ORGANS)}, model["labels"]
        body, headers = client.infer(NAME, ids[0])
        out = tmp_path / "pred.nii.gz"
        out.write_bytes(body)
        pred_img, study = nib.load(str(out)), nib.load(str(studies / f"{ids[0]}.nii.gz"))
        assert pred_img.shape == study.shape, (pred_img.shape, headers)
        np.testing.assert_allclose(pred_img.affine, study.affine, atol=1e-4)
        assert (np.asarray(pred_img.dataobj).astype(int) == own).mean() > 0.99
        served = Path(client.bundle_dir) / "models" / "model.pt"
        before = _sha256(served)
        client.train(NAME, {"max_epochs": 1, "val_split": 0.5, "pretrained": True}, timeout=900)
        assert _sha256(served) != before
        assert "val_loss" in Path(client.log_path).read_text(errors="replace")
