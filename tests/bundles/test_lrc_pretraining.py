"""LRC and MoCo pretraining of the multi-organ CT bundle, fine-tuning from them (Table 4.2's rows) and the Table 4.1
clustering evaluation, through MONAI's bundle API on tiny synthetic CT."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from monai_contrastive.networks import FeatureUNet, GlobalLocalUNet

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "lrc_multiorgan_ct")

DATA = {
    "demo_kwargs": {"num_labelled": 7, "num_unlabelled": 1, "matrix": 48, "num_validation": 2, "num_test": 2},
    "amp": False,
    "device": "cpu",
    "num_workers": 0,
    "patch_size": 32,
    "batch_size": 2,
    "slices_per_volume": 2,
}
MOCO = {**DATA, "elastic#spacing": [8, 8], "epochs": 2}
PRETRAIN = {**MOCO, "superpixels#min_size": 20}
FINETUNE = {**DATA, "num_train_volumes": 2, "val_sw_batch_size": 32, "val_interval": 1, "epochs": 1}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "lrc_multiorgan_ct"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    return str(root)


def _chain(error: BaseException) -> str:
    text = []
    while error is not None:
        text.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(text)


def _losses(trainer, name):
    seen = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(float(e.state.output[name])))
    return seen


def test_pretrain_lrc_moco_then_finetune_each_row(bundle, workflow):
    torch.set_num_threads(2)
    models = os.path.join(bundle, "models")

    # fine-tuning from a pretraining that has not run names the config to run
    with pytest.raises(Exception) as err:
        workflow(bundle, ["train.json"], **FINETUNE, init="lrc").parser.get_parsed_content("network")
    assert "run the bundle's configs/pretrain_lrc.json first" in _chain(err.value)

    # LRC: superpixels cached on disk, paired elastic views, the loss and its region counts logged
    wf = workflow(bundle, ["pretrain_common.json", "pretrain_lrc.json"], **PRETRAIN)
    trainer = wf.parser.get_parsed_content("train#trainer")
    lrc, regions = _losses(trainer, "loss_lrc"), _losses(trainer, "loss_lrc_regions")
    wf.run()
    n_items = len(wf.parser.get_parsed_content("train_items"))
    assert n_items == 4  # unlabelled pool + training images (labels unused)
    assert trainer.state.iteration == 2 * 2 and len(lrc) == 4
    assert all(torch.isfinite(torch.tensor(lrc))) and min(regions) >= 4  # >= 2 images x 2 regions
    cache = os.path.join(bundle, "cache", "pretrain")
    assert len([f for f in os.listdir(cache) if f.endswith(".pt")]) == n_items
    lrc_state = torch.load(os.path.join(models, "pretrain_lrc", "model.pt"), weights_only=True)
    assert any(k.startswith("encoder.upcat_1.") for k in lrc_state)  # encoder and decoder E_l, D_l
    with open(os.path.join(models, "pretrain_lrc", "model.pt.json")) as f:
        assert json.load(f)["iteration"] == 4
    wf.finalize()

    # MoCo: encoder only, 128-d projection, queue filled by the keys, SGD 0.03
    wf = workflow(bundle, ["pretrain_common.json", "pretrain_moco.json"], **MOCO, queue_size=16)
    net = wf.parser.get_parsed_content("network")
    opt = wf.parser.get_parsed_content("optimizer")
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.03 and opt.defaults["momentum"] == 0.9
    queue0 = net.queue.clone()
    trainer = wf.parser.get_parsed_content("train#trainer")
    moco = _losses(trainer, "loss_moco")
    wf.run()
    assert len(moco) == trainer.state.iteration > 0 and all(torch.isfinite(torch.tensor(moco)))
    assert int(net.queue_ptr) == (trainer.state.iteration * 2 * 2) % 16 and not torch.equal(net.queue, queue0)
    moco_state = torch.load(os.path.join(models, "pretrain_moco", "model.pt"), weights_only=True)
    assert not any("upcat" in k for k in moco_state) and "queue" in moco_state
    wf.finalize()

    # Table 4.2's rows: which branch starts from which pretraining
    enc = FeatureUNet(encoder_only=True)
    enc.load_state_dict(
        {k[len("encoder.encoder.") :]: v for k, v in moco_state.items() if k.startswith("encoder.encoder.")}
    )
    loc = FeatureUNet()
    loc.load_state_dict({k[len("encoder.") :]: v for k, v in lrc_state.items() if k.startswith("encoder.")})
    for init, from_moco, from_lrc in (
        ("random", False, False),
        ("moco", True, False),
        ("lrc", False, True),
        ("lrc_moco", True, True),
    ):
        wf = workflow(bundle, ["train.json"], **FINETUNE, init=init)
        net = wf.parser.get_parsed_content("network")
        assert isinstance(net, GlobalLocalUNet)
        g = torch.equal(net.global_unet.conv_0.conv_0.conv.weight, enc.conv_0.conv_0.conv.weight)
        l_ = torch.equal(net.local_unet.conv_0.conv_0.conv.weight, loc.conv_0.conv_0.conv.weight)
        d = torch.equal(net.local_unet.upcat_1.convs.conv_0.conv.weight, loc.upcat_1.convs.conv_0.conv.weight)
        assert (g, l_, d) == (from_moco, from_lrc, from_lrc), init
        wf.finalize()

    # fine-tune LRC + MoCo for one epoch: a run that trains (a previous random-init run would not be resumed)
    wf = workflow(bundle, ["train.json"], **FINETUNE, init="lrc_moco")
    trainer = wf.parser.get_parsed_content("train#trainer")
    wf.run()
    assert trainer.state.iteration == 1 and os.path.isfile(os.path.join(models, "model.pt"))
    wf.finalize()
    # a pretraining re-run that finds its run complete rewrites the same weights: the fine-tuning still resumes
    before = os.path.getmtime(os.path.join(models, "pretrain_lrc", "model.pt"))
    wf = workflow(bundle, ["pretrain_common.json", "pretrain_lrc.json"], **PRETRAIN)
    wf.run()
    wf.finalize()
    assert torch.equal(
        torch.load(os.path.join(models, "pretrain_lrc", "model.pt"), weights_only=True)[
            "encoder.conv_0.conv_0.conv.weight"
        ],
        lrc_state["encoder.conv_0.conv_0.conv.weight"],
    )
    wf = workflow(bundle, ["train.json"], **{**FINETUNE, "epochs": 2}, init="lrc_moco")
    trainer = wf.parser.get_parsed_content("train#trainer")
    wf.run()
    assert trainer.state.iteration == 2, before
    wf.finalize()
    with pytest.raises(Exception) as err:
        wf = workflow(bundle, ["train.json"], **FINETUNE, init="moco")
        wf.run()
    assert "written by a run on other data" in _chain(err.value) and "init" in _chain(err.value)

    # Table 4.1: AMI / ARI of k-means on LRC embeddings vs superpixels, pretrained and random init.
    wf = workflow(
        bundle,
        ["pretrain_common.json", "pretrain_lrc.json", "evaluate_lrc.json"],
        workflow_type="eval",
        **PRETRAIN,
        cluster_slices_per_volume=2,
    )
    wf.run()
    with open(os.path.join(bundle, "eval", "lrc_clusters.json")) as f:
        res = json.load(f)
    for row in ("LRC", "random init."):
        assert res[row]["slices"] == 4 and -1.0 <= res[row]["ami_mean"] <= 1.0 and -1.0 <= res[row]["ari_mean"] <= 1.0
    assert os.path.isfile(os.path.join(bundle, "eval", "lrc_clusters.png"))
    wf.finalize()


def test_failed_pretraining_writes_no_model(bundle, workflow, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(bundle, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "cache"))
    wf = workflow(str(root), ["pretrain_common.json", "pretrain_lrc.json"], **PRETRAIN)
    trainer = wf.parser.get_parsed_content("train#trainer")

    def boom(engine):
        raise RuntimeError("killed")

    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), boom)
    with pytest.raises(Exception) as err:
        wf.run()
    assert "killed" in _chain(err.value)
    assert not os.path.exists(os.path.join(root, "models", "pretrain_lrc", "model.pt"))
