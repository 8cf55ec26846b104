"""The MONAI Label harness end to end: a real server serving a tiny 3D segmentation bundle (/info, /infer, /train)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from .monailabel_harness import (
    INSTALL_ENV,
    VENV_ENV,
    _wanted_stamp,
    install_allowed,
    monailabel_python,
    monailabel_server,
    skip_reason,
)

BUNDLE_NAME = "tiny_ct_segmentation"
SHAPE = (32, 28, 24)
# LPS voxel axes (x and y flipped in NIfTI's RAS+ world), anisotropic spacing, an offset origin
AFFINE = np.array(
    [[-1.5, 0.0, 0.0, 40.0], [0.0, -1.0, 0.0, 25.0], [0.0, 0.0, 2.5, -30.0], [0.0, 0.0, 0.0, 1.0]], dtype=np.float64
)
CHANNEL_DEF = {"0": "background", "1": "a", "2": "b"}
NETWORK_DEF = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
}
SCALE = {"_target_": "ScaleIntensityRanged", "a_min": -100, "a_max": 300, "b_min": 0.0, "b_max": 1.0, "clip": True}


# --------------------------------------------------------------------------------------------------- bundle, studies


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def make_bundle(root: Path) -> Path:
    """A minimal MONAI segmentation bundle: UNet 3D, 3 channels, inference.json, train.json, random weights."""
    configs = root / "configs"
    _write_json(
        configs / "metadata.json",
        {
            "version": "0.0.1",
            "monai_version": "1.4.0",
            "name": "tiny CT segmentation (test)",
            "description": "A randomly initialised 3D UNet for the MONAI Label harness test.",
            "task": "segmentation",
            "network_data_format": {
                "inputs": {
                    "image": {
                        "type": "image",
                        "format": "hounsfield",
                        "num_channels": 1,
                        "spatial_shape": [32, 32, 32],
                        "dtype": "float32",
                        "value_range": [0, 1],
                        "is_patch_data": True,
                        "channel_def": {"0": "image"},
                    }
                },
                "outputs": {
                    "pred": {
                        "type": "image",
                        "format": "segmentation",
                        "num_channels": 3,
                        "spatial_shape": [32, 32, 32],
                        "dtype": "float32",
                        "value_range": [0, 1],
                        "is_patch_data": True,
                        "channel_def": CHANNEL_DEF,
                    }
                },
            },
        },
    )
    common = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": NETWORK_DEF,
        "network": "$@network_def.to(@device)",
    }
    _write_json(
        configs / "inference.json",
        {
            **common,
            "preprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "LoadImaged", "keys": "image"},
                    {"_target_": "EnsureChannelFirstd", "keys": "image"},
                    {**SCALE, "keys": "image"},
                    {"_target_": "EnsureTyped", "keys": "image"},
                ],
            },
            "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 1},
            "postprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                    {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                ],
            },
        },
    )
    keys = ["image", "label"]
    # MONAI Label overrides train#dataset#data, validate#dataset#data, train#trainer#max_epochs, train#handlers
    # (a CheckpointLoader of models/model.pt into @network is inserted first), device and bundle_root
    _write_json(
        configs / "train.json",
        {
            **common,
            "ckpt_dir": "$@bundle_root + '/models'",
            "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
            "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
            "train": {
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": [
                        {"_target_": "LoadImaged", "keys": keys},
                        {"_target_": "EnsureChannelFirstd", "keys": keys},
                        {**SCALE, "keys": "image"},
                        {"_target_": "DivisiblePadd", "keys": keys, "k": 4},
                        {"_target_": "EnsureTyped", "keys": keys},
                    ],
                },
                "dataset": {"_target_": "Dataset", "data": [], "transform": "@train#preprocessing"},
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@train#dataset",
                    "batch_size": 1,
                    "shuffle": True,
                    "num_workers": 0,
                },
                "inferer": {"_target_": "SimpleInferer"},
                "postprocessing": {
                    "_target_": "Compose",
                    "transforms": [
                        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                        {"_target_": "AsDiscreted", "keys": keys, "argmax": [True, False], "to_onehot": 3},
                    ],
                },
                "handlers": [
                    {
                        "_target_": "ValidationHandler",
                        "validator": "@validate#evaluator",
                        "epoch_level": True,
                        "interval": 1,
                    },
                    {
                        "_target_": "StatsHandler",
                        "tag_name": "train_loss",
                        "output_transform": "$monai.handlers.from_engine(['loss'], first=True)",
                    },
                ],
                "trainer": {
                    "_target_": "SupervisedTrainer",
                    "max_epochs": 1,
                    "device": "@device",
                    "train_data_loader": "@train#dataloader",
                    "network": "@network",
                    "loss_function": "@loss",
                    "optimizer": "@optimizer",
                    "inferer": "@train#inferer",
                    "postprocessing": "@train#postprocessing",
                    "train_handlers": "@train#handlers",
                },
            },
            "validate": {
                "preprocessing": "%train#preprocessing",
                "dataset": {"_target_": "Dataset", "data": [], "transform": "@validate#preprocessing"},
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@validate#dataset",
                    "batch_size": 1,
                    "shuffle": False,
                    "num_workers": 0,
                },
                "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 1},
                "postprocessing": "%train#postprocessing",
                "handlers": [
                    {"_target_": "StatsHandler", "iteration_log": False},
                    {
                        "_target_": "CheckpointSaver",
                        "save_dir": "@ckpt_dir",
                        "save_dict": {"model": "@network"},
                        "save_key_metric": True,
                        "key_metric_filename": "model.pt",
                    },
                ],
                "key_metric": {
                    "val_mean_dice": {
                        "_target_": "MeanDice",
                        "include_background": False,
                        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
                    }
                },
                "evaluator": {
                    "_target_": "SupervisedEvaluator",
                    "device": "@device",
                    "val_data_loader": "@validate#dataloader",
                    "network": "@network",
                    "inferer": "@validate#inferer",
                    "postprocessing": "@validate#postprocessing",
                    "key_val_metric": "@validate#key_metric",
                    "val_handlers": "@validate#handlers",
                },
            },
            "initialize": ["$monai.utils.set_determinism(seed=0)"],
            "run": ["$@train#trainer.run()"],
        },
    )
    torch.manual_seed(0)
    net = UNet(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"})
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def make_studies(root: Path, n: int = 2) -> list[str]:
    """``n`` small CT-like NIfTI studies in ``root`` with their labels in ``root/labels/final`` (MONAI Label layout)."""
    rng = np.random.default_rng(0)
    (root / "labels" / "final").mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    ids = []
    for i in range(n):
        centre_a = np.array([10 + 2 * i, 10, 8])
        centre_b = np.array([22 - i, 18, 16])
        label = np.zeros(SHAPE, np.uint8)
        label[((grid - centre_a[:, None, None, None]) ** 2).sum(0) <= 25] = 1
        label[((grid - centre_b[:, None, None, None]) ** 2).sum(0) <= 16] = 2
        image = np.where(label == 1, 80.0, np.where(label == 2, 200.0, -50.0)) + rng.normal(0, 10, SHAPE)
        study = f"study_{i:02d}"
        nib.save(nib.Nifti1Image(image.astype(np.float32), AFFINE), str(root / f"{study}.nii.gz"))
        nib.save(nib.Nifti1Image(label, AFFINE), str(root / "labels" / "final" / f"{study}.nii.gz"))
        ids.append(study)
    return ids


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------- fast checks


def test_install_allowed_and_absent_venv(tmp_path, monkeypatch):
    """Without permission to install and without a virtualenv, the harness says so (the tests then skip)."""
    monkeypatch.setenv(VENV_ENV, str(tmp_path / "no-venv"))
    monkeypatch.delenv(INSTALL_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert not install_allowed()
    assert monailabel_python() is None
    assert str(tmp_path / "no-venv") in skip_reason() and INSTALL_ENV in skip_reason()
    monkeypatch.setenv("CI", "true")
    assert install_allowed()
    monkeypatch.delenv("CI")
    monkeypatch.setenv(INSTALL_ENV, "1")
    assert install_allowed()


def test_stamp_tracks_pins_and_setup_cfg():
    stamp = _wanted_stamp()
    assert any(p.startswith("monailabel==") for p in stamp["pins"]) and "pydicom<3" in stamp["pins"]
    assert len(stamp["setup_cfg_sha256"]) == 64


def test_bundle_runs_with_monai(tmp_path):
    """The test bundle is a valid MONAI bundle: its inference config runs in this environment."""
    from monai.bundle import ConfigParser

    bundle = make_bundle(tmp_path / "bundle")
    studies = tmp_path / "studies"
    ids = make_studies(studies, 1)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu"))
    data = parser.get_parsed_content("preprocessing")({"image": str(studies / f"{ids[0]}.nii.gz")})
    device = parser.get_parsed_content("device")
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None].to(device), net)[0]
    pred = parser.get_parsed_content("postprocessing")(data)["pred"]
    assert tuple(pred.shape) == (1, *SHAPE)


@pytest.mark.filterwarnings("ignore:parsing config_file")
def test_bundle_trains_with_monai(tmp_path):
    """The train config runs with the overrides MONAI Label's bundle train task passes (monai.bundle.run)."""
    from monai.bundle import run

    bundle = make_bundle(tmp_path / "bundle")
    studies = tmp_path / "studies"
    items = [
        {"image": str(studies / f"{i}.nii.gz"), "label": str(studies / "labels" / "final" / f"{i}.nii.gz")}
        for i in make_studies(studies, 2)
    ]
    before = _sha256(bundle / "models" / "model.pt")
    loader = {
        "_target_": "CheckpointLoader",
        "load_path": str(bundle / "models" / "model.pt"),
        "load_dict": {"model": "$@network"},
        "strict": False,
    }
    train = json.loads((bundle / "configs" / "train.json").read_text())
    run(
        run_id="run",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "train.json"),
        bundle_root=str(bundle),
        device="cpu",
        **{
            "train#trainer#max_epochs": 1,
            "train#dataset#data": items[:1],
            "validate#dataset#data": items[1:],
            "train#handlers": [loader, *train["train"]["handlers"]],
        },
    )
    assert _sha256(bundle / "models" / "model.pt") != before


# --------------------------------------------------------------------------------------------------- real server


@pytest.mark.monailabel
def test_monailabel_server_info_infer_train(tmp_path, ml_python):
    bundle = make_bundle(tmp_path / "bundle")
    studies = tmp_path / "studies"
    ids = make_studies(studies, 2)

    with monailabel_server(str(bundle), str(studies), BUNDLE_NAME, tmp_path / "server", python=ml_python) as client:
        # /info: the bundle as a segmentation model with the labels of its channel_def, and a trainer
        info = client.info()
        model = info["models"][BUNDLE_NAME]
        assert model["type"] == "segmentation", model
        assert model["labels"] == {"a": 1, "b": 2}, model
        assert BUNDLE_NAME in info["trainers"], info["trainers"]

        # /infer: a NIfTI label volume on the study's grid
        body, headers = client.infer(BUNDLE_NAME, ids[0])
        out = tmp_path / "pred.nii.gz"
        out.write_bytes(body)
        pred = nib.load(str(out))
        assert pred.shape == SHAPE, (pred.shape, headers)
        np.testing.assert_allclose(pred.affine, AFFINE, atol=1e-4)
        values = set(np.unique(np.asarray(pred.dataobj)).astype(int).tolist())
        assert values <= {0, 1, 2}, values

        # /train: one epoch on the labelled studies (one for training, one for validation); the checkpoint saver of
        # the bundle's train.json rewrites models/model.pt in the served copy of the bundle
        served_model = Path(client.bundle_dir) / "models" / "model.pt"
        before = _sha256(served_model)
        result = client.train(BUNDLE_NAME, {"max_epochs": 1, "val_split": 0.5, "pretrained": True}, timeout=600)
        assert result == {}, result
        assert _sha256(served_model) != before
        log = Path(client.log_path).read_text(errors="replace")
        assert "Training Finished" in log
        assert "Total Records for Training: 1" in log and "Total Records for Validation: 1" in log

        # the retrained model serves again
        body, _ = client.infer(BUNDLE_NAME, ids[1])
        out.write_bytes(body)
        assert nib.load(str(out)).shape == SHAPE

        # training as a background task of the server (a subprocess), polled until it ends
        before = _sha256(served_model)
        task = client.train_background(BUNDLE_NAME, {"max_epochs": 1, "val_split": 0.5}, timeout=600)
        assert task["status"] == "DONE", task
        assert _sha256(served_model) != before
    assert os.path.exists(client.log_path)
