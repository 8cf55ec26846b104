"""The exported DCC-CL bundle, unmodified, in a real MONAI Label server (the plugin's app: the label map's organs come
from the metadata's ``label_map_def``, the network being a per-organ-patch DeepLabV3+): /info, /infer, /train (runs
with CI=true, when the MONAI Label virtualenv may be built; see :mod:`tests.monailabel_harness`)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_contrastive.data.ct_labels import FLARE22_ORGANS

from ..monailabel_harness import PLUGIN_APP, copy_studies, monailabel_server
from .conftest import _workflow
from .test_dcc_multiphase_ct import BUNDLE, FINE, TINY

NAME = "dcc_multiphase_ct"
# the sizes the tiny models are trained with, written into the served configs (MONAI Label runs them as they are)
SIZES = {k: TINY[k] for k in ("coarse_size", "coarse_channels", "encoder_name", "patch_size")}


@pytest.fixture(scope="module")
def trained(ml_python, tmp_path_factory):
    """``(exported bundle, demo data, source bundle)``: the coarse stage, then the fine stage from random init
    (``init none``), trained briefly on tiny synthetic CT; the source's configs set to the sizes they were trained with
    (as a user would set them, ``init`` left at its default ``dcc``); then ``monai-contrastive export``: the zoo bundle
    MONAI Label serves, with ``models/model.pt`` and ``models/coarse.pt``, and ``init`` ``none`` in its ``train.json``
    (``checkpoints.export_overrides``: it ships no pretraining)."""
    from monai_contrastive import cli

    root = tmp_path_factory.mktemp("ml")
    bundle = root / NAME
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    # 20 coarse epochs (about 10 s): the coarse masks then hold several organs, so the fine stage sees several
    wf = _workflow(str(bundle), ["coarse.json"], **TINY, epochs=20, val_interval=20, batch_size=2, learning_rate=0.02)
    wf.run()
    wf.finalize()
    wf = _workflow(str(bundle), ["train.json"], **TINY, **FINE, init="none", epochs=2, learning_rate=0.001)
    wf.run()
    wf.finalize()
    demo = root / "demo_data"
    shutil.move(str(bundle / "demo_data"), str(demo))
    for name, extra in (("inference.json", {}), ("train.json", {**FINE, "num_workers": 0})):
        path = bundle / "configs" / name
        config = json.loads(path.read_text())
        config.update(SIZES, **extra)
        path.write_text(json.dumps(config, indent=4))
    assert json.loads((bundle / "configs" / "train.json").read_text())["init"] == "dcc"
    cli.main(["export", str(bundle), "--out", str(root / "zoo")])
    served = root / "zoo" / NAME
    assert json.loads((served / "configs" / "train.json").read_text())["init"] == "none"
    shipped = {p.name for p in (served / "models").iterdir()}
    assert {"coarse.pt", "model.pt"} <= shipped and not any(n.startswith("pretrained") for n in shipped), shipped
    return served, demo, bundle


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.monailabel
def test_monailabel_info_infer_train(trained, ml_python, tmp_path):
    bundle, demo, source = trained
    studies = tmp_path / "studies"
    ids = copy_studies(demo, studies)

    # the source bundle's own inference.json (the plugin's code) on the first study, for comparison
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(studies / f"{ids[0]}.nii.gz", single)
    own_dir = tmp_path / "own"
    settings = {"demo_dir": str(demo), "demo_kwargs": TINY["demo_kwargs"], "amp": False, "device": "cpu"}
    wf = _workflow(str(source), ["inference.json"], "infer", **settings, input_dir=str(single), output_dir=str(own_dir))
    wf.run()
    wf.finalize()
    own = np.asarray(nib.load(str(own_dir / f"{ids[0]}_seg.nii.gz")).dataobj).astype(int)
    # several organs: a server answer with other label values (or none) would not agree
    assert len(np.unique(own)) >= 3, np.unique(own)

    with monailabel_server(
        str(bundle), str(studies), NAME, tmp_path / "server", python=ml_python, app=PLUGIN_APP
    ) as client:
        model = client.info()["models"][NAME]
        assert model["type"] == "segmentation", model
        assert model["labels"] == {organ: i + 1 for i, organ in enumerate(FLARE22_ORGANS)}, model["labels"]

        # /infer: the coarse 3D U-Net (models/coarse.pt) -> organ patches -> the DeepLabV3+ (models/model.pt) -> vote
        body, headers = client.infer(NAME, ids[0], timeout=900)
        out = tmp_path / "pred.nii.gz"
        out.write_bytes(body)
        pred_img, study = nib.load(str(out)), nib.load(str(studies / f"{ids[0]}.nii.gz"))
        assert pred_img.shape == study.shape, (pred_img.shape, headers)
        np.testing.assert_allclose(pred_img.affine, study.affine, atol=1e-4)
        pred = np.asarray(pred_img.dataobj).astype(int)
        assert (pred == own).mean() > 0.99, (pred == own).mean()

        # /train on the labelled studies (one for training, one for validation) rewrites models/model.pt
        served = Path(client.bundle_dir) / "models" / "model.pt"
        before = _sha256(served)
        log_before = len(Path(client.log_path).read_text(errors="replace"))
        client.train(NAME, {"max_epochs": 1, "val_split": 0.5, "pretrained": True}, timeout=900)
        assert _sha256(served) != before
        log = Path(client.log_path).read_text(errors="replace")[log_before:]
        assert "Total Records for Training: 1" in log and "Total Records for Validation: 1" in log
        assert re.search(r"Metrics -- val_patch_dice: \d", log), log[-5000:]  # the validation ran
        # the served bundle trained on the datastore only: no demo data generated beside it
        assert not (Path(client.bundle_dir) / "demo_data").exists()
        assert (Path(client.bundle_dir) / "models" / "coarse.pt").is_file()
