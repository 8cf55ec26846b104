"""``monai-contrastive export`` of the CLEF bundle: zoo layout, metadata and weights; with CI=true also the exported
inference in a virtualenv with only the listed packages (see :mod:`tests.zoo_harness`) against the source bundle."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from monai_contrastive import cli

from .. import zoo_harness as zh
from ..test_export import check_metadata
from .conftest import _workflow
from .test_clef_ct import INFER, TINY

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "clef_ct")
NAME = "clef_ct"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(source bundle, exported bundle, input folder, the source bundle's label map of its volume)``."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("clef_export")
    src = root / NAME
    shutil.copytree(BUNDLE, src, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    wf = _workflow(str(src), ["train.json"], **TINY, epochs=1)
    wf.run()
    wf.finalize()
    # the exported inference.json runs as it is: give it the sizes the model was trained with, as a user would
    path = src / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config.update(spatial_size=TINY["spatial_size"], features=TINY["features"])
    path.write_text(json.dumps(config, indent=4))
    cli.main(["export", str(src), "--out", str(root / "zoo")])
    inputs = root / "inputs"
    inputs.mkdir()
    volume = sorted((src / "demo_data" / "imagesTs").glob("*.nii.gz"))[0]
    shutil.copy(volume, inputs / volume.name)
    own = root / "own"
    settings = {k: v for k, v in INFER.items() if k in ("amp", "device", "demo_kwargs")}
    wf = _workflow(str(src), ["inference.json"], "infer", **settings, input_dir=str(inputs), output_dir=str(own))
    wf.run()
    wf.finalize()
    seg = own / volume.name.replace(".nii.gz", "_seg.nii.gz")
    assert seg.is_file(), sorted(os.listdir(own))
    return src, root / "zoo" / NAME, inputs, seg


def test_export_layout_metadata_and_weights(exported):
    src, dst, _, _ = exported
    assert zh.missing_zoo_files(dst) == []
    meta = json.loads((dst / "configs" / "metadata.json").read_text())
    assert check_metadata(meta) == []
    assert "monai-contrastive" not in meta["required_packages_version"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 14 and len(pred["channel_def"]) == 14
    assert zh.plugin_references(dst) == []
    state = torch.load(dst / "models" / "model.pt", weights_only=True)
    trained = torch.load(src / "models" / "model.pt", weights_only=True)
    assert set(state) == set(trained) and any(k.startswith("backbone.") for k in state)
    for k, v in trained.items():
        torch.testing.assert_close(state[k], v)


def test_exported_bundle_runs_with_only_its_listed_packages(exported, tmp_path):
    """The exported inference without monai-contrastive writes the source bundle's label map; zoo CI's
    verify_net_in_out and ckpt_export pass there (skipped unless the side virtualenv may be built: CI=true)."""
    _, dst, inputs, seg = exported
    zh.check_exported_segmentation(dst, inputs, seg, tmp_path)
