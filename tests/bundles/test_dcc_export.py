"""``monai-contrastive export`` of the DCC-CL bundle: the zoo layout with both weights the served pipeline loads
(``models/model.pt``, the fine DeepLabV3+; ``models/coarse.pt``, the coarse 3D U-Net that makes the organ attention
maps); with CI=true also the exported inference in a virtualenv with only the listed packages (see
:mod:`tests.zoo_harness`) against the source bundle."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from monai.networks.nets import UNet

from monai_contrastive import cli
from monai_contrastive.export import export_bundle, read_large_files
from monai_contrastive.networks import dcc_segmentation_net

from .. import zoo_harness as zh
from ..test_export import check_metadata
from .conftest import _workflow
from .test_dcc_multiphase_ct import BUNDLE, INFER, TINY

NAME = "dcc_multiphase_ct"


def _coarse(out_channels: int = 14) -> UNet:
    return UNet(3, 1, out_channels, TINY["coarse_channels"], [2, 2], num_res_units=2, norm="instance")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A copy of the bundle holding the two models its inference loads (seeded random weights: export and the
    exported inference must reproduce them whatever they learned) and an inference.json at the models' sizes, as a
    user would set it."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("dcc_export")
    src = root / NAME
    shutil.copytree(BUNDLE, src, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    (src / "models").mkdir()
    torch.save({"model": dcc_segmentation_net(TINY["encoder_name"]).state_dict()}, src / "models" / "model.pt")
    torch.save(_coarse().state_dict(), src / "models" / "coarse.pt")
    path = src / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config.update({k: v for k, v in INFER.items() if k != "amp"})
    path.write_text(json.dumps(config, indent=4))
    return root, src


@pytest.fixture(scope="module")
def exported(trained):
    """``(source bundle, exported bundle, input folder, the source bundle's label map of its volume)``."""
    root, src = trained
    cli.main(["export", str(src), "--out", str(root / "zoo")])
    wf = _workflow(str(src), ["coarse.json"], **TINY)  # writes the demo data the inference reads
    datalist = wf.parser.get_parsed_content("datalist_file")
    with open(datalist) as f:
        volume = os.path.join(os.path.dirname(datalist), json.load(f)["testing"][0]["image"])
    inputs = root / "inputs"
    inputs.mkdir()
    shutil.copy(volume, inputs / os.path.basename(volume))
    own = root / "own"
    wf = _workflow(str(src), ["inference.json"], "infer", **INFER, input_dir=str(inputs), output_dir=str(own))
    wf.run()
    wf.finalize()
    seg = own / os.path.basename(volume).replace(".nii.gz", "_seg.nii.gz")
    assert seg.is_file(), sorted(os.listdir(own))
    return src, root / "zoo" / NAME, inputs, seg


def test_export_ships_the_fine_and_the_coarse_model(exported):
    src, dst, _, _ = exported
    assert zh.missing_zoo_files(dst) == []
    assert check_metadata(json.loads((dst / "configs" / "metadata.json").read_text())) == []
    assert zh.plugin_references(dst) == []
    hosted = {e["path"] for e in read_large_files(str(dst / "large_files.yml"))}
    assert {"models/model.pt", "models/coarse.pt"} <= hosted
    fine = torch.load(dst / "models" / "model.pt", weights_only=True)
    for k, v in torch.load(src / "models" / "model.pt", weights_only=True)["model"].items():
        torch.testing.assert_close(fine[k], v)
    coarse = torch.load(dst / "models" / "coarse.pt", weights_only=True)
    source = torch.load(src / "models" / "coarse.pt", weights_only=True)
    assert set(coarse) == set(source)
    for k, v in source.items():
        torch.testing.assert_close(coarse[k], v)


def test_exported_train_config_starts_from_the_served_model_not_a_pretraining_it_lacks(exported):
    """The source trains from ``models/pretrained_dcc.pt`` (``init`` dcc); the exported bundle ships no pretraining,
    so ``checkpoints.export_overrides`` sets ``init`` none there (MONAI Label's /train then loads models/model.pt)."""
    from monai.bundle import ConfigParser

    src, dst, _, _ = exported
    assert json.loads((src / "configs" / "train.json").read_text())["init"] == "dcc"
    assert not (dst / "models" / "pretrained_dcc.pt").exists()
    parser = ConfigParser()
    parser.read_config(str(dst / "configs" / "train.json"))
    parser["bundle_root"] = str(dst)
    assert parser["init"] == "none"
    assert parser.get_parsed_content("pretrained_path") == ""


def test_export_without_coarse_model_names_it(trained, tmp_path):
    _, src = trained
    bare = tmp_path / NAME
    shutil.copytree(src, bare)
    os.remove(bare / "models" / "coarse.pt")
    with pytest.raises(FileNotFoundError, match="models/coarse.pt"):
        export_bundle(str(bare), str(tmp_path / "zoo"))
    assert not (tmp_path / "zoo" / NAME).exists()


def test_export_with_a_coarse_model_for_another_organ_count_names_it(trained, tmp_path):
    _, src = trained
    other = tmp_path / NAME
    shutil.copytree(src, other)
    torch.save(_coarse(out_channels=6).state_dict(), other / "models" / "coarse.pt")
    with pytest.raises(RuntimeError, match="coarse.pt does not fit coarse_def"):
        export_bundle(str(other), str(tmp_path / "zoo"))
    assert not (tmp_path / "zoo" / NAME).exists()


def test_exported_bundle_runs_with_only_its_listed_packages(exported, tmp_path):
    """The exported coarse -> patches -> fine -> vote inference without monai-contrastive writes the source bundle's
    label map; zoo CI's verify_net_in_out and ckpt_export pass there (skipped unless the side virtualenv may be
    built: CI=true)."""
    _, dst, inputs, seg = exported
    zh.check_exported_segmentation(dst, inputs, seg, tmp_path)
