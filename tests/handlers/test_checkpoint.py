"""Checkpoints: resumable runs, the best and the final model, loading a model's weights (the atomic writes
themselves: tests/test_io.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ignite.engine import Engine, Events

from monai_contrastive.handlers import BestModelSaver, FinalModelSaver, ResumableCheckpoint, load_model_weights


def _trainer_with_checkpoint(tmp_path, fingerprint, epochs=2):
    net = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: None)
    ckpt = ResumableCheckpoint(str(tmp_path), {"model": net}, fingerprint=fingerprint)
    ckpt.attach(trainer)
    return trainer, ckpt


def test_resumable_checkpoint_refuses_another_runs_checkpoint(tmp_path):
    fp = {"datalist": "/data/a/dataset.json", "num_items": 10, "items_sha256": "abc", "fold": 0}
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, fp)
    trainer.run([0, 1], max_epochs=2)
    assert torch.load(ckpt.path, weights_only=False)["run_fingerprint"] == fp
    # the same run resumes (a finished one trains nothing)
    trainer, _ = _trainer_with_checkpoint(tmp_path, dict(fp))
    trainer.run([0, 1], max_epochs=3)
    assert trainer.state.epoch == 3
    other = dict(fp, datalist="/data/b/dataset.json", items_sha256="def")
    trainer, _ = _trainer_with_checkpoint(tmp_path, other)
    with pytest.raises(ValueError) as info:
        trainer.run([0, 1], max_epochs=3)
    msg = str(info.value)
    assert "other data (datalist, items_sha256 differ)" in msg and "/data/a/dataset.json" in msg
    assert "/data/b/dataset.json" in msg and "delete" in msg and "ckpt_dir" in msg
    # optional: without a fingerprint nothing is recorded or checked (other bundles)
    trainer, ckpt = _trainer_with_checkpoint(tmp_path / "plain", None)
    trainer.run([0], max_epochs=1)
    assert "run_fingerprint" not in torch.load(ckpt.path, weights_only=False)


def test_resumable_checkpoint_defers_to_a_checkpoint_loader(tmp_path):
    """MONAI Label's /train adds a CheckpointLoader of models/model.pt: a second /train on other labels trains from
    those weights instead of resuming (or refusing) the first run's checkpoint, which is kept aside."""
    from monai.handlers import CheckpointLoader

    fp = {"datalist": "a", "items_sha256": "abc"}
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, fp)
    trainer.run([0, 1], max_epochs=2)
    first = torch.load(ckpt.path, weights_only=False)
    model_pt = tmp_path / "model.pt"
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(3.0)
    torch.save({"model": net.state_dict()}, model_pt)

    other = dict(fp, datalist="b", items_sha256="def")
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, other)
    target = ckpt.save_dict["model"]
    CheckpointLoader(str(model_pt), {"model": target}).attach(trainer)
    trainer.run([0, 1], max_epochs=1)
    assert trainer.state.epoch == 1  # trained, from epoch 0: not the first run's finished state
    assert torch.all(target.weight == 3.0)  # from model.pt
    assert torch.load(ckpt.path, weights_only=False)["run_fingerprint"] == other
    previous = torch.load(tmp_path / "checkpoint_last.previous.pt", weights_only=False)
    assert previous["run_fingerprint"] == first["run_fingerprint"] == fp
    # without the option, the refusal stands
    trainer, ckpt = _trainer_with_checkpoint(tmp_path, fp)
    ckpt.start_from_loader = False
    CheckpointLoader(str(model_pt), {"model": ckpt.save_dict["model"]}).attach(trainer)
    with pytest.raises(ValueError, match="other data"):
        trainer.run([0, 1], max_epochs=3)


def _validator(values: list[float], net: torch.nn.Module, name: str = "val_mae") -> Engine:
    """An evaluator whose run ``k`` reports ``values[k]``; before each run the network's weight is set to ``k``, so a
    saved model tells which validation it came from."""
    evaluator = Engine(lambda e, b: None)
    evaluator.state.metrics = {}
    runs = {"k": -1}

    @evaluator.on(Events.STARTED)
    def _next(engine):
        runs["k"] += 1
        with torch.no_grad():
            net.weight.fill_(float(runs["k"]))
        engine.state.metrics = {name: values[runs["k"]], "val_r2": 1.0 - values[runs["k"]], "note": "text"}

    return evaluator


@pytest.mark.parametrize(
    "mode, values, best_run", [("min", [0.5, 0.3, 0.4, math.nan, 0.35], 1), ("max", [0.1, 0.6, 0.2], 1)]
)
def test_best_model_saver_keeps_the_best_validation(tmp_path, mode, values, best_run):
    net = torch.nn.Linear(1, 1, bias=False)
    path = tmp_path / "model.pt"
    saver = BestModelSaver(str(path), {"model": net}, "val_mae", mode=mode)
    evaluator = _validator(values, net)
    saver.attach(evaluator)
    saved_at = []
    for _ in values:
        evaluator.run([0])
        saved_at.append(float(torch.load(path, weights_only=False)["model"]["weight"]))
    # the file always holds the best validation so far (NaN never wins), with its metric and epoch
    expected_best = []
    best = math.inf if mode == "min" else -math.inf
    for k, v in enumerate(values):
        if not math.isnan(v) and (v < best if mode == "min" else v > best):
            best, run = v, k
        expected_best.append(float(run))
    assert saved_at == expected_best
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["metric"] == pytest.approx(values[best_run]) and ckpt["metric_name"] == "val_mae"
    assert ckpt["metrics"] == {
        "val_mae": pytest.approx(values[best_run]),
        "val_r2": pytest.approx(1 - values[best_run]),
    }
    assert saver.best == pytest.approx(values[best_run])


def test_best_model_saver_resumes_its_best_and_writes_plain_models(tmp_path):
    net = torch.nn.Linear(1, 1, bias=False)
    path = tmp_path / "model.pt"
    saver = BestModelSaver(str(path), {"model": net}, "val_mae", plain=True)
    evaluator = _validator([0.3], net)
    saver.attach(evaluator)
    evaluator.run([0])
    # plain: the state dict alone (what the model zoo and MONAI Label load), the metrics beside it
    assert set(torch.load(path, weights_only=True)) == {"weight"}
    assert json.loads((tmp_path / "model.pt.json").read_text())["metric"] == pytest.approx(0.3)
    # a resumed run compares against the restored best: a worse first validation does not overwrite the model
    resumed = BestModelSaver(str(path), {"model": net}, "val_mae", plain=True)
    resumed.load_state_dict(saver.state_dict())
    evaluator = _validator([0.4], net)
    resumed.attach(evaluator)
    evaluator.run([0])
    assert float(torch.load(path, weights_only=True)["weight"]) == 0.0 and resumed.best == pytest.approx(0.3)
    with pytest.raises(KeyError, match="'val_auc' not computed"):
        BestModelSaver(str(path), {"model": net}, "val_auc")(evaluator)
    with pytest.raises(ValueError, match="one state dict"):
        BestModelSaver(str(path), {"model": net, "ecdf": net}, "val_mae", plain=True)
    with pytest.raises(ValueError, match="'min' or 'max'"):
        BestModelSaver(str(path), {"model": net}, "val_mae", mode="lowest")


def _training(net: torch.nn.Module, fail_at: int | None = None) -> Engine:
    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise RuntimeError("killed")
        with torch.no_grad():
            net.weight.add_(1.0)
        return {"loss": torch.tensor(0.5 * engine.state.iteration), "loss_lrc": 0.25, "counts": torch.ones(3)}

    return Engine(step)


def test_final_model_saver_writes_the_trained_model_only_when_the_run_completes(tmp_path):
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.5)
    wrapped = torch.nn.DataParallel(net)  # state dict keys under "module.": the saved file must not have them
    path = tmp_path / "pretrain_lrc" / "model.pt"
    trainer = _training(net)
    FinalModelSaver(str(path), wrapped).attach(trainer)
    trainer.run([0, 1, 2], max_epochs=2)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"weight"} and torch.equal(state["weight"], net.weight.detach())
    assert torch.equal(state["weight"], torch.full((1, 2), 6.5))  # after all 6 steps
    info = json.loads((tmp_path / "pretrain_lrc" / "model.pt.json").read_text())
    assert info == {"epoch": 2, "iteration": 6, "last_losses": {"loss": 3.0, "loss_lrc": 0.25}}
    # a run that fails writes nothing
    other = tmp_path / "failed" / "model.pt"
    trainer = _training(net, fail_at=2)
    FinalModelSaver(str(other), net).attach(trainer)
    with pytest.raises(RuntimeError, match="killed"):
        trainer.run([0, 1, 2], max_epochs=1)
    assert not other.exists()
    with pytest.raises(RuntimeError, match="without one iteration"):
        FinalModelSaver(str(other), net)(Engine(lambda e, b: None))


def test_load_model_weights_plain_keyed_and_missing(tmp_path):
    torch.manual_seed(0)
    src = torch.nn.Linear(3, 2)
    torch.save({"model": src.state_dict(), "epoch": 4}, tmp_path / "ckpt.pt")
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    for name, key in (("ckpt.pt", "model"), ("plain.pt", "model"), ("plain.pt", None)):
        dst = load_model_weights(torch.nn.Linear(3, 2), str(tmp_path / name), key)
        assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias), (name, key)
    with pytest.raises(FileNotFoundError, match="fold 2: checkpoint .*absent.pt' not found; train the bundle first"):
        load_model_weights(torch.nn.Linear(3, 2), str(tmp_path / "absent.pt"), what="fold 2: checkpoint")
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model_weights(torch.nn.Linear(4, 2), str(tmp_path / "ckpt.pt"))
