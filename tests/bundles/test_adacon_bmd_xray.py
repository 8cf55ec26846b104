"""The BMD bundle end to end through MONAI's bundle API on tiny synthetic data: train, resume, evaluate, infer."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
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
    # written with the usual permissions (0666 less the umask), not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    for path in (ckpt, best):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path
    # the checkpoint records what it was trained on
    fingerprint = torch.load(ckpt, weights_only=False)["run_fingerprint"]
    assert fingerprint["fold"] == 0 and fingerprint["datalist"].endswith(os.path.join("demo_data", "dataset.json"))
    assert fingerprint["num_items"] == len(wf.parser.get_parsed_content("train_items"))
    wf.finalize()

    # a re-run of the finished run trains nothing and keeps the earlier validation report
    val_json = os.path.join(bundle, "models", "fold0", "val_metrics.json")
    report = json.load(open(val_json))
    assert report["last_validation"]
    wf = workflow(bundle, ["train.json"], **TINY, iterations=4)
    wf.run()
    assert json.load(open(val_json)) == report
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
    """Table V scheme: contrastive-only pretraining, then L1 fine-tuning initialised from it, in its own folder: it
    must not resume an earlier train.json run of the same fold (it did: 0 iterations, pretrained weights replaced)."""
    torch.set_num_threads(2)
    if not os.path.isfile(os.path.join(bundle, "models", "fold0", "checkpoint_last.pt")):
        wf = workflow(bundle, ["train.json"], **TINY, iterations=2)  # an earlier supervised run of fold 0
        wf.run()
        wf.finalize()
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
    backbone = [k for k in pretrained if k.startswith("encoder.backbone.") and pretrained[k].is_floating_point()]
    assert backbone and any(k.startswith("heads.embedding.") for k in pretrained)
    assert wf.parser.get_parsed_content("ckpt_dir") == os.path.join(bundle, "models", "two_stage", "fold0")
    trainer = wf.parser.get_parsed_content("train#trainer")
    started, at_first_step = [], {}

    def _first(engine):
        started.append(engine.state.iteration)
        if not at_first_step:  # after any resume: the weights the fine-tune starts from
            at_first_step.update({k: v.detach().clone() for k, v in net.state_dict().items() if k in backbone})

    trainer.add_event_handler(Events.ITERATION_STARTED, _first)
    wf.run()
    assert started == [1, 2], "the fine-tune must train its own iterations, not resume the train.json run"
    for k in backbone:
        torch.testing.assert_close(at_first_step[k], pretrained[k], msg=k)
    saved = torch.load(os.path.join(bundle, "models", "two_stage", "fold0", "checkpoint_last.pt"), weights_only=False)
    assert saved["trainer"]["iteration"] == 2
    assert os.path.isfile(os.path.join(bundle, "models", "two_stage", "fold0", "model.pt"))
    wf.finalize()


def _chain(error):
    chain, e = [], error
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    return chain


def test_mixed_formats_datalist(bundle, tmp_path, workflow):
    """Real X-ray exports in one datalist: 12-bit DICOM MONOCHROME1 and MONOCHROME2, rescaled 16-bit DICOM, 8/16-bit
    PNG, JPEG and NIfTI all reach the network as the same (1, H, W) float image (train.json and inference.json)."""
    pytest.importorskip("pydicom")
    import nibabel as nib
    from PIL import Image

    from tests.transforms.test_xray import write_dicom

    rng = np.random.default_rng(0)
    items = []
    for i in range(8):
        film = (rng.random((48, 40)) * 3000 + 500).astype(np.uint16)
        scaled = (film - film.min()) / (film.max() - film.min())
        kind = i % 8
        name = ["m2.dcm", "m1.dcm", "r16.dcm", "p8.png", "p16.png", "f.jpg", "f.nii.gz", "m1b.dcm"][kind]
        path = tmp_path / f"{i}_{name}"
        if name.startswith("m2"):
            write_dicom(path, film)
        elif name.startswith("m1"):
            write_dicom(path, 4095 - film, "MONOCHROME1")
        elif name == "r16.dcm":
            write_dicom(path, film * 16, bits=16, slope="0.5", intercept="-1024")
        elif name == "p8.png" or name == "f.jpg":
            Image.fromarray((scaled * 255).astype(np.uint8)).save(path)
        elif name == "p16.png":
            Image.fromarray((scaled * 65535).astype(np.uint16)).save(path)
        else:
            nib.save(nib.Nifti1Image(film.T.astype(np.float32), np.eye(4)), str(path))
        items.append({"image": path.name, "label": 0.6 + 0.02 * i, "patient": f"P{i}"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": items, "testing": items}))
    wf = workflow(bundle, ["train.json"], **TINY, iterations=2, dataset_dir=str(tmp_path))
    pre = wf.parser.get_parsed_content("validate#preprocessing")
    for item in wf.parser.get_parsed_content("all_items"):
        out = pre(item)
        assert out["image"].shape == (1, 32, 32) and out["image"].dtype == torch.float32, item["image"]
        assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    wf.finalize()
    wf = workflow(bundle, ["inference.json"], workflow_type="infer", image_size=[32, 32], dataset_dir=str(tmp_path))
    pre = wf.parser.get_parsed_content("preprocessing")
    assert all(pre(dict(it))["image"].shape == (1, 32, 32) for it in wf.parser.get_parsed_content("test_items"))
    wf.finalize()


def test_truncated_png_is_named(bundle, tmp_path, workflow):
    from monai_contrastive.data import generate_bmd_demo

    datalist = generate_bmd_demo(str(tmp_path / "demo"), num_patients=8, image_size=32)
    items = json.load(open(datalist))["training"]
    bad = os.path.join(tmp_path, "demo", items[0]["image"])
    data = open(bad, "rb").read()
    open(bad, "wb").write(data[: len(data) // 2])
    wf = workflow(bundle, ["train.json"], **TINY, iterations=2, dataset_dir=datalist)
    pre = wf.parser.get_parsed_content("validate#preprocessing")
    with pytest.raises(Exception) as info:
        pre(wf.parser.get_parsed_content("all_items")[0])
    assert any(os.path.basename(bad) in m and "cannot read" in m for m in _chain(info.value)), _chain(info.value)
    wf.finalize()


def test_fewer_items_than_one_batch_stops(bundle, tmp_path, workflow):
    from monai_contrastive.data import generate_bmd_demo

    datalist = generate_bmd_demo(str(tmp_path / "demo"), num_patients=8, image_size=32)
    with pytest.raises(Exception) as info:
        wf = workflow(bundle, ["train.json"], **{**TINY, "batch_size": 64}, iterations=2, dataset_dir=datalist, fold=0)
        wf.parser.get_parsed_content("train#trainer")
    n = len(wf.parser.get_parsed_content("train_items"))
    assert any(f"{n} training items, batch_size 64" in m for m in _chain(info.value)), _chain(info.value)


def test_resuming_another_runs_checkpoint_is_refused(bundle, tmp_path, workflow):
    """Same bundle root, other dataset_dir: the fold-0 checkpoint of the demo run must not be resumed."""
    from monai_contrastive.data import generate_bmd_demo

    ckpt = os.path.join(bundle, "models", "fold0", "checkpoint_last.pt")
    if not os.path.isfile(ckpt):
        wf = workflow(bundle, ["train.json"], **TINY, iterations=2)
        wf.run()
        wf.finalize()
    datalist = generate_bmd_demo(str(tmp_path / "other"), num_patients=16, image_size=32, seed=5)
    wf = workflow(bundle, ["train.json"], **TINY, iterations=8, dataset_dir=datalist)
    with pytest.raises(Exception) as info:
        wf.run()
    msg = next((m for m in _chain(info.value) if "other data" in m), "")
    assert "datalist" in msg and "items_sha256" in msg and datalist in msg and "delete" in msg, _chain(info.value)
    wf.finalize()
