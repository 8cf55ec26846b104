"""``monai-contrastive export`` of the LRC multi-organ CT bundle: zoo layout, metadata and checks, and the exported
inference in a fresh virtualenv with only the packages its metadata lists (see :mod:`tests.zoo_harness`) giving the
label maps of the source bundle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from monai_contrastive import cli
from monai_contrastive.export import read_large_files

from .. import zoo_harness as zh
from ..test_export import check_metadata
from .conftest import _workflow

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "lrc_multiorgan_ct")
NAME = "lrc_multiorgan_ct"
SETTINGS = {
    "demo_kwargs": {"num_labelled": 4, "num_unlabelled": 1, "matrix": 64, "num_validation": 1, "num_test": 1},
    "patch_size": 64,
    "batch_size": 2,
    "slices_per_volume": 2,
    "num_workers": 0,
    "amp": False,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(source bundle, exported bundle, test volume, the source bundle's label map of it)``."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("lrc_export")
    src = root / NAME
    shutil.copytree(BUNDLE, src, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", ".cache"))
    wf = _workflow(str(src), ["train.json"], **SETTINGS, epochs=2, val_interval=1)
    wf.run()
    wf.finalize()
    # the exported inference.json runs as it is: give it the patch size the model was trained with, as a user would
    path = src / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["patch_size"] = SETTINGS["patch_size"]
    path.write_text(json.dumps(config, indent=4))
    cli.main(["export", str(src), "--out", str(root / "zoo")])
    dst = root / "zoo" / NAME

    inputs = root / "inputs"
    inputs.mkdir()
    volume = sorted((src / "demo_data" / "imagesTs").glob("*.nii.gz"))[0]
    shutil.copy(volume, inputs / volume.name)
    own = root / "own"
    wf = _workflow(
        str(src), ["inference.json"], "infer", amp=False, device="cpu", input_dir=str(inputs), output_dir=str(own)
    )
    wf.run()
    wf.finalize()
    seg = own / volume.name.replace(".nii.gz", "_seg.nii.gz")
    assert seg.is_file(), sorted(os.listdir(own))
    return src, dst, inputs, seg


def test_export_layout_metadata_and_weights(exported):
    src, dst, _, _ = exported
    assert zh.missing_zoo_files(dst) == []
    meta = json.loads((dst / "configs" / "metadata.json").read_text())
    assert check_metadata(meta) == []
    packages = meta["required_packages_version"]
    assert "monai-contrastive" not in packages and {"nibabel", "itk", "scikit-image"} <= set(packages)
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 14
    assert zh.plugin_references(dst) == []
    # models/model.pt is the trained network's plain state dict, tensor for tensor
    state = torch.load(dst / "models" / "model.pt", weights_only=True)
    trained = torch.load(src / "models" / "model.pt", weights_only=True)
    trained = trained.get("model", trained)
    assert set(state) == set(trained) and any(k.startswith("local_unet.") for k in state)
    for k, v in trained.items():
        torch.testing.assert_close(state[k], v)
    for e in read_large_files(dst / "large_files.yml"):
        assert hashlib.md5((dst / e["path"]).read_bytes()).hexdigest() == e["hash_val"]


def test_exported_bundle_runs_with_only_its_listed_packages(exported, tmp_path):
    """The exported inference in a virtualenv without monai-contrastive writes the source bundle's label map; zoo
    CI's verify_net_in_out and ckpt_export pass there."""
    _, dst, inputs, seg = exported
    own = zh.check_exported_segmentation(dst, inputs, seg, tmp_path)
    assert len(np.unique(own)) > 1  # the comparison is not of two empty maps
