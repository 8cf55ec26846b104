"""The AdaCon bundles' demo configs (train.json + demo.json) on tiny data: they build, train and print the demo
summary (validation metrics of the selection set, training wall time, the best checkpoint's held-out test R²
against the demo's target); the LVEF demo model is served by
inference.json with the demo keys that `monai-contrastive infer --demo` copies."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil

import pytest
import torch

HERE = os.path.dirname(__file__)
BUNDLES = os.path.join(HERE, "..", "..", "bundles")


def _copy(tmp_path, name):
    root = tmp_path / name
    shutil.copytree(
        os.path.join(BUNDLES, name),
        root,
        ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", ".cache"),
    )
    return str(root)


def _demo_cfg(root):
    with open(os.path.join(root, "configs", "demo.json")) as f:
        return json.load(f)


def _check_summary(out, models_dir, wf):
    """The validation report (selection set, training time) and the held-out test report of the best checkpoint on
    items that neither training nor selection saw, with the demo's R² bar applied to the held-out score."""
    assert "the best checkpoint is selected on it" in out and "training: " in out and "iterations in" in out
    assert "demo target: held-out test R²" in out and "demo target: validation" not in out
    val = json.load(open(os.path.join(models_dir, "val_metrics.json")))
    assert val["training"]["iterations"] > 0 and val["training"]["seconds"] > 0 and "r2_target" not in val
    test = json.load(open(os.path.join(models_dir, "heldout_test_metrics.json")))
    test_items = wf.parser.get_parsed_content("heldout_test_items")
    seen = wf.parser.get_parsed_content("train_items") + wf.parser.get_parsed_content("val_items")
    assert test["test"]["n"] == len(test_items) > 0
    assert not {str(x["image"]) for x in seen} & {str(x["image"]) for x in test_items}
    assert all(math.isfinite(test["test"][k]) for k in ("mae", "rmse", "r2"))
    assert test["r2_target"]["target"] == 0.6 and test["r2_target"]["r2"] == test["test"]["r2"]
    assert test["r2_target"]["reached"] == (test["test"]["r2"] >= 0.6)
    assert test["checkpoint"].endswith("model.pt") and os.path.isfile(test["checkpoint"])


def test_lvef_demo_config(tmp_path, capsys, workflow):
    torch.set_num_threads(2)
    root = _copy(tmp_path, "adacon_lvef_echo")
    tiny = {
        "demo_kwargs": {"num_videos": 20, "frames": [40, 60]},
        "clip_length": 4,
        "clip_period": 2,
        "frame_stride": 8,
        "batch_size": 4,
        "val_batch_size": 4,
        "num_workers": 0,
        "epochs": 1,
        "val_interval": 1,
        "precise_bn_batches": 1,
        "amp": False,
        "device": "cpu",
    }
    wf = workflow(root, ["train.json", "demo.json"], **tiny)
    net = wf.parser.get_parsed_content("network")
    assert any(type(m).__name__ == "FramePoolVideoNet" for m in net.modules())
    assert float(net.heads["pred"].target_std) > 1.0  # the regression head predicts standardised EF
    wf.run()
    _check_summary(capsys.readouterr().out, os.path.join(root, "models"), wf)
    wf.finalize()

    # `monai-contrastive infer --demo`: inference.json plus the demo.json keys it also has (backbone, clip sizes)
    demo = _demo_cfg(root)
    with open(os.path.join(root, "configs", "inference.json")) as f:
        infer_keys = set(json.load(f))
    overrides = {k: v for k, v in demo.items() if k in infer_keys}
    assert "backbone" in overrides
    overrides.update(
        {
            k: tiny[k]
            for k in ("demo_kwargs", "clip_length", "clip_period", "frame_stride", "num_workers", "amp", "device")
        },
        test_clip_stride=8,
        test_max_clips=2,
    )
    wf = workflow(root, ["inference.json"], workflow_type="infer", **overrides)
    wf.run()
    with open(os.path.join(root, "eval", "predictions.csv")) as f:
        assert len([r for r in csv.reader(f) if r]) == len(wf.parser.get_parsed_content("test_items"))
    wf.finalize()


def test_bmd_demo_config(tmp_path, capsys, workflow):
    torch.set_num_threads(2)
    root = _copy(tmp_path, "adacon_bmd_xray")
    tiny = {
        "demo_kwargs": {"num_patients": 24, "image_size": 64},
        "image_size": [32, 32],
        "batch_size": 4,
        "num_views": 2,
        "num_workers": 0,
        "iterations": 4,
        "epoch_length": 2,
        "val_interval": 1,
        "lr_milestones": [2, 3],
        "amp": False,
        "device": "cpu",
    }
    wf = workflow(root, ["train.json", "demo.json"], **tiny)
    wf.run()
    _check_summary(capsys.readouterr().out, os.path.join(root, "models", "fold0"), wf)
    wf.finalize()

    # inference.json as it is (the paper's EfficientNet-B1) cannot serve the demo's model: one message that says so
    # and what to run, not a load_state_dict dump
    plain = workflow(
        root,
        ["inference.json"],
        workflow_type="infer",
        image_size=[32, 32],
        folds=[0],
        demo_kwargs=tiny["demo_kwargs"],
        num_workers=0,
        device="cpu",
    )
    with pytest.raises(Exception) as info:
        plain.parser.get_parsed_content("network")
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    mismatch = next(m for m in chain if m.startswith("the weights"))
    assert os.path.join("fold0", "model.pt") in mismatch and "tensor(s) of another shape" in mismatch
    assert f"`monai-contrastive infer {os.path.basename(root)} --demo True`" in mismatch
    assert not any("size mismatch for" in m for m in chain)

    # `monai-contrastive infer --demo`: inference.json with the demo's inference_overrides (its backbone inside the
    # fold ensemble) and the demo.json keys inference.json also has
    demo = _demo_cfg(root)
    with open(os.path.join(root, "configs", "inference.json")) as f:
        infer_keys = set(json.load(f))
    overrides = dict(demo["inference_overrides"])
    overrides.update({k: v for k, v in demo.items() if k in infer_keys})
    overrides.update(image_size=[32, 32], folds=[0], demo_kwargs=tiny["demo_kwargs"], num_workers=0, device="cpu")
    wf = workflow(root, ["inference.json"], workflow_type="infer", **overrides)
    wf.run()
    with open(os.path.join(root, "eval", "predictions.csv")) as f:
        assert len([r for r in f.read().splitlines() if r]) == len(wf.parser.get_parsed_content("test_items")) > 0
    wf.finalize()
