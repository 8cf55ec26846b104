"""The LVEF echo bundle end to end through MONAI's bundle API on tiny synthetic EchoNet data:
train (killed after one epoch, then resumed), evaluate on TEST (single clip and all clips), infer, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import verify_net_in_out

from monai_contrastive.data import generate_echo_demo, load_echonet_filelist

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "adacon_lvef_echo")

TINY = {
    "demo_kwargs": {"num_videos": 20, "frames": [40, 60]},
    "clip_length": 4,
    "clip_period": 2,
    "frame_stride": 8,
    "frame_pad": 12,
    "batch_size": 4,
    "val_batch_size": 4,
    "num_views": 2,
    "num_workers": 0,
    "learning_rate": 0.001,
    "amp": False,
    "device": "cpu",
}
TEST_CLIPS = {"test_clip_stride": 8, "test_max_clips": 3}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "adacon_lvef_echo"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", ".cache"))
    return str(root)


def test_train_resume_evaluate_infer(bundle, capsys, workflow):
    torch.set_num_threads(2)
    wf = workflow(bundle, ["train.json"], **TINY, epochs=1)
    wf.run()
    models = os.path.join(bundle, "models")
    ckpt, best = os.path.join(models, "checkpoint_last.pt"), os.path.join(models, "model.pt")
    assert os.path.isfile(ckpt) and os.path.isfile(best)
    # normalisation fitted on TRAIN videos only, saved with the bundle and stored in the model's buffers
    train_items = wf.parser.get_parsed_content("train_items")
    assert {x["split"] for x in train_items} == {"TRAIN"}
    with open(os.path.join(models, "normalization.json")) as f:
        norm = json.load(f)
    assert norm["fitted_on"] == len(train_items) and len(norm["mean"]) == 3
    state = torch.load(best, weights_only=True)
    torch.testing.assert_close(state["model"]["input_norm.mean"], torch.tensor(norm["mean"]))
    # the regression head starts at the training mean EF; the ECDF is fitted on TRAIN EF
    net = wf.parser.get_parsed_content("network_def")
    ecdf = wf.parser.get_parsed_content("ecdf")
    assert len(ecdf.values) == len(train_items)
    assert wf.parser.get_parsed_content("loss").regression_views == "first"
    # the decoded videos are cached once
    assert len(os.listdir(os.path.join(bundle, ".cache", "videos"))) >= len(train_items)
    assert saved_epoch(ckpt) == 1
    wf.finalize()
    del net

    wf = workflow(bundle, ["train.json"], **TINY, epochs=2)
    assert torch.load(ckpt, weights_only=False)["run_fingerprint"]["num_items"] == len(train_items)
    trainer = wf.parser.get_parsed_content("train#trainer")
    epochs = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    wf.run()
    assert epochs == [2], "the second run must continue from epoch 1, not start over"
    out = capsys.readouterr().out
    assert "val_mse=" in out and "val_mae=" in out and "val_r2=" in out
    wf.finalize()

    wf = workflow(bundle, ["train.json", "evaluate.json"], workflow_type="eval", **TINY, **TEST_CLIPS)
    wf.run()
    with open(os.path.join(bundle, "eval", "test_metrics.json")) as f:
        metrics = json.load(f)
    test_items = wf.parser.get_parsed_content("test_items")
    assert {x["split"] for x in test_items} == {"TEST"} and metrics["n"] == len(test_items)
    assert set(metrics["protocols"]) == {"single clip", "all clips"}
    for proto in metrics["protocols"].values():
        assert set(proto["all"]) == {"mae", "rmse", "r2", "n"}
    with open(os.path.join(bundle, "eval", "test_predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(test_items)
    # the all-clips protocol averages several clips: it differs from the single clip
    assert any(r["pred (single clip)"] != r["pred (all clips)"] for r in rows)
    assert os.path.isfile(os.path.join(bundle, "eval", "test_scatter.png"))
    wf.finalize()

    wf = workflow(bundle, ["inference.json"], workflow_type="infer", **_infer_overrides())
    wf.run()
    with open(os.path.join(bundle, "eval", "predictions.csv")) as f:
        preds = [r for r in csv.reader(f) if r]
    assert len(preds) == len(test_items)
    assert {os.path.abspath(r[0]) for r in preds} == {x["image"] for x in test_items}
    assert os.path.isfile(os.path.join(bundle, "eval", "predictions_metrics.json"))
    assert "TEST split (all clips averaged)" in capsys.readouterr().out
    wf.finalize()

    # inference without the demo's settings reuses the demo data the model was trained on (it regenerated it with
    # the generator's defaults, deleting the videos), and --split VAL is reported as VAL
    filelist = os.path.join(bundle, "demo_data", "FileList.csv")
    stamp = os.stat(filelist).st_mtime_ns
    overrides = {k: v for k, v in _infer_overrides().items() if k != "demo_kwargs"}
    wf = workflow(bundle, ["inference.json"], workflow_type="infer", **overrides, split="VAL")
    wf.run()
    out = capsys.readouterr().out
    assert os.stat(filelist).st_mtime_ns == stamp
    assert "using the existing 'lvef_echo' demo data" in out and "num_videos=20" in out
    assert "VAL split (all clips averaged)" in out and "Test set" not in out
    assert {x["split"] for x in wf.parser.get_parsed_content("test_items")} == {"VAL"}
    wf.finalize()

    # MONAI's check of the declared input/output shapes on the inference network (full 32 x 112 x 112 clip)
    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        config_file=os.path.join(bundle, "configs", "inference.json"),
        bundle_root=bundle,
        n=1,
    )


def saved_epoch(path):
    state = torch.load(path, weights_only=False)["trainer"]
    return state["iteration"] // state["epoch_length"]


def _infer_overrides():
    keys = ("demo_kwargs", "clip_length", "clip_period", "frame_stride", "num_workers", "amp", "device")
    return {k: TINY[k] for k in keys} | TEST_CLIPS


def test_evaluate_per_quality_from_json_datalist(bundle, tmp_path, workflow):
    """A JSON datalist (CAMUS-style) with ``quality``: the TEST report breaks the metrics down by quality."""
    pytest.importorskip("cv2")
    model = os.path.join(bundle, "models", "model.pt")
    if not os.path.isfile(model):
        pytest.skip("needs the model trained by test_train_resume_evaluate_infer")
    root = generate_echo_demo(str(tmp_path / "echo"), num_videos=20, seed=1, frames=(40, 60))
    split = {s: load_echonet_filelist(root, s) for s in ("TRAIN", "VAL", "TEST")}
    quality = ["good", "medium", "poor"]
    content = {
        "training": [{"image": x["image"], "label": x["label"]} for x in split["TRAIN"]],
        "validation": [{"image": x["image"], "label": x["label"]} for x in split["VAL"]],
        "test": [
            {"image": x["image"], "label": x["label"], "quality": quality[i % 3]} for i, x in enumerate(split["TEST"])
        ],
    }
    path = tmp_path / "camus_like.json"
    path.write_text(json.dumps(content))
    out = tmp_path / "eval"
    wf = workflow(
        bundle,
        ["train.json", "evaluate.json"],
        "eval",
        **TINY,
        **TEST_CLIPS,
        dataset_dir=str(path),
        output_dir=str(out),
    )
    wf.run()
    metrics = json.load(open(out / "test_metrics.json"))
    parts = set(metrics["protocols"]["all clips"])
    assert {"all", "quality=good", "quality=medium"} <= parts
    assert sum(metrics["protocols"]["all clips"][p]["n"] for p in parts if p != "all") == len(content["test"])
    assert "quality=good" in (out / "test_metrics.md").read_text()
    wf.finalize()


def test_corrupt_video_is_named(bundle, tmp_path, workflow):
    root = generate_echo_demo(str(tmp_path / "echo"), num_videos=20, seed=2, frames=(40, 60))
    bad = load_echonet_filelist(root, "TRAIN")[0]["image"]
    with open(bad, "wb") as f:
        f.write(b"not a video")
    with pytest.raises(Exception) as info:
        wf = workflow(
            bundle,
            ["train.json"],
            **TINY,
            epochs=1,
            dataset_dir=root,
            bundle_root_unused=None,
            ckpt_dir=str(tmp_path / "models"),
            video_cache_dir=str(tmp_path / "cache"),
        )
        wf.run()
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(os.path.basename(bad) in m for m in chain), chain


def _chain(error):
    chain, e = [], error
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    return chain


def _bad_dataset_run(bundle, tmp_path, workflow, root, **overrides):
    with pytest.raises(Exception) as info:
        wf = workflow(
            bundle,
            ["train.json"],
            **{**TINY, **overrides},
            epochs=1,
            dataset_dir=root,
            ckpt_dir=str(tmp_path / "models"),
            video_cache_dir=str(tmp_path / "cache"),
        )
        wf.run()
    return _chain(info.value)


def test_truncated_and_odd_sized_videos_are_named(bundle, tmp_path, workflow):
    """A truncated AVI (half its frames) and a 128x128 video among 112x112 ones stop the run naming the file."""
    cv2 = pytest.importorskip("cv2")
    root = generate_echo_demo(str(tmp_path / "echo"), num_videos=20, seed=3, frames=(40, 60))
    train = load_echonet_filelist(root, "TRAIN")
    cut = train[0]["image"]
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    chain = _bad_dataset_run(bundle, tmp_path / "a", workflow, root)
    assert any(os.path.basename(cut) in m and "frames" in m for m in chain), chain

    root = generate_echo_demo(str(tmp_path / "echo2"), num_videos=20, seed=4, frames=(40, 60))
    big = load_echonet_filelist(root, "TRAIN")[1]["image"]
    writer = cv2.VideoWriter(big, cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (128, 128), True)
    for _ in range(50):
        writer.write(np.full((128, 128, 3), 90, np.uint8))
    writer.release()
    chain = _bad_dataset_run(bundle, tmp_path / "b", workflow, root)
    assert any(os.path.basename(big) in m and "128" in m for m in chain), chain


def test_fewer_train_videos_than_one_batch_stops(bundle, tmp_path, workflow):
    """The paper's batch 20 on 14 TRAIN videos: an error with both numbers, not "dataloader is empty", rc 0."""
    root = generate_echo_demo(str(tmp_path / "echo"), num_videos=20, seed=2, frames=(40, 60))
    n = len(load_echonet_filelist(root, "TRAIN"))
    chain = _bad_dataset_run(bundle, tmp_path, workflow, root, batch_size=20)
    assert any(f"{n} training items, batch_size 20" in m for m in chain), chain
