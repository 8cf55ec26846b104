"""The BMD bundle end to end through MONAI's bundle API on tiny synthetic data: train, resume, evaluate, infer."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from ignite.engine import Events
from monai.bundle import verify_net_in_out

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "adacon_bmd_xray")

TINY = {
    "demo_kwargs": {"num_patients": 24, "image_size": 64},
    "image_size": [32, 32],
    "batch_size": 4,
    "num_views": 2,
    "num_workers": 0,
    "epoch_length": 2,
    "val_interval": 1,
    "amp": False,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "adacon_bmd_xray"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    return str(root)


def test_train_resume_evaluate_infer(bundle, capsys, workflow):
    torch.set_num_threads(2)
    # a run that stops after 1 epoch (as if killed), then the same command with the full length resumes it
    wf = workflow(bundle, ["train.json"], **TINY, iterations=2)
    wf.run()
    ckpt = os.path.join(bundle, "models", "fold0", "checkpoint_last.pt")
    best = os.path.join(bundle, "models", "fold0", "model.pt")
    assert os.path.isfile(ckpt) and os.path.isfile(best)
    saved = torch.load(ckpt, weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "ecdf", "best_model"} <= set(saved)
    assert saved["trainer"]["iteration"] == 2
    wf.finalize()

    wf = workflow(bundle, ["train.json"], **TINY, iterations=4)
    trainer = wf.parser.get_parsed_content("train#trainer")
    started = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration))
    wf.run()
    assert started == [3, 4], "the second run must continue from iteration 2, not start over"
    assert trainer.state.iteration == 4
    model = torch.load(best, weights_only=True)
    assert set(model) >= {"model", "ecdf", "metric"}
    # the ECDF is saved with the model and equals the one fitted on the training fold
    ecdf = wf.parser.get_parsed_content("ecdf")
    torch.testing.assert_close(model["ecdf"]["values"], ecdf.values)
    out = capsys.readouterr().out
    assert "val_mae=" in out and "val_rmse=" in out and "val_r2=" in out
    val_items = wf.parser.get_parsed_content("val_items")
    train_items = wf.parser.get_parsed_content("train_items")
    assert not {x["patient"] for x in val_items} & {x["patient"] for x in train_items}
    wf.finalize()

    wf = workflow(bundle, ["train.json", "evaluate.json"], workflow_type="eval", **TINY, folds=[0])
    wf.run()
    with open(os.path.join(bundle, "eval", "cv_metrics.json")) as f:
        cv = json.load(f)
    assert set(cv["folds"]["fold 0"]) >= {"mae", "rmse", "r2", "n"}
    assert cv["folds"]["fold 0"]["n"] == len(val_items)
    wf.finalize()

    wf = workflow(
        bundle,
        ["inference.json"],
        workflow_type="infer",
        image_size=[32, 32],
        folds=[0],
        demo_kwargs=TINY["demo_kwargs"],
    )
    wf.run()
    with open(os.path.join(bundle, "eval", "predictions.csv")) as f:
        rows = [r for r in f.read().splitlines() if r]
    test_items = wf.parser.get_parsed_content("test_items")
    assert len(rows) == len(test_items) > 0
    assert os.path.isfile(os.path.join(bundle, "eval", "predictions_metrics.json"))


def test_verify_net_in_out(bundle):
    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        config_file=os.path.join(bundle, "configs", "inference.json"),
        n=1,
        any=8,
    )


def test_bad_datalist_names_the_item(bundle, tmp_path, workflow):
    os.makedirs(tmp_path / "images")
    data = {"training": [{"image": "images/missing.png", "label": 0.7, "patient": "A"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(Exception) as info:
        wf = workflow(bundle, ["train.json"], **TINY, iterations=2, dataset_dir=str(tmp_path))
        wf.parser.get_parsed_content("all_items")
    # MONAI wraps config-expression errors; the cause shown in the traceback names the item and the file
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any("missing.png" in m and "0" in m for m in chain), chain


def test_two_stage_pretrain_then_finetune(bundle, workflow):
    """Table V scheme: contrastive-only pretraining, then L1 fine-tuning initialised from it."""
    torch.set_num_threads(2)
    wf = workflow(bundle, ["train.json", "pretrain.json"], **TINY, iterations=2)
    assert wf.parser.get_parsed_content("loss").gamma_reg == 0.0
    wf.run()
    pre = os.path.join(bundle, "models", "pretrain_fold0", "pretrained.pt")
    assert os.path.isfile(pre)
    pretrained = torch.load(pre, weights_only=True)["model"]
    wf.finalize()
    wf = workflow(bundle, ["train.json", "finetune.json"], **TINY, iterations=2)
    loss = wf.parser.get_parsed_content("loss")
    assert loss.gamma_con == 0.0 and wf.parser.get_parsed_content("learning_rate") == 0.001
    net = wf.parser.get_parsed_content("network")
    key = next(k for k in pretrained if k.startswith("encoder.backbone.") and pretrained[k].is_floating_point())
    torch.testing.assert_close(net.state_dict()[key], pretrained[key])
    wf.run()
    wf.finalize()
