"""TrainingLog: the console gets one line per epoch (mean loss terms, validation metrics); the file every iteration."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from monai_contrastive.handlers import TrainingLog


def _trainer(losses: list[list[float]]) -> Engine:
    """An engine whose iteration i of epoch e outputs ``loss_a = losses[e][i]``, ``loss_b = 2 * loss_a``, and their
    sum as ``loss`` (the layout ``MultiViewTrainer`` gives)."""

    def step(engine, batch):
        a = losses[engine.state.epoch - 1][(engine.state.iteration - 1) % len(losses[0])]
        return {"loss": torch.tensor(3 * a), "loss_a": torch.tensor(a), "loss_b": 2 * a, "pred": torch.zeros(2)}

    return Engine(step)


def test_one_console_line_per_epoch_and_every_iteration_in_the_file(tmp_path, caplog):
    losses = [[1.0, 2.0, 6.0], [0.5, 0.5, 2.0]]
    trainer = _trainer(losses)
    validator = Engine(lambda e, b: None)
    validator.state.metrics = {}

    @validator.on(Events.COMPLETED)
    def _metrics(engine):
        engine.state.metrics = {"val_mae": 0.25 / trainer.state.epoch, "val_r2": 0.5}

    @trainer.on(Events.EPOCH_COMPLETED(every=2))  # validation every second epoch, before the log's epoch line
    def _validate(engine):
        validator.run([0])

    log_file = tmp_path / "runs" / "train_iterations.log"
    TrainingLog(str(log_file), validator=validator, progress_bar=True).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_contrastive.training"):
        trainer.run([0, 1, 2], max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "monai_contrastive.training"]
    assert len(lines) == 2  # one per epoch, nothing per iteration
    # epoch means computed here by hand: epoch 1 loss_a (1 + 2 + 6) / 3 = 3, loss_b 6, loss 9
    assert lines[0].startswith("Epoch 1/2: loss 9 (loss_a 3, loss_b 6); 3 iterations")
    assert "validation" not in lines[0]
    assert lines[1].startswith("Epoch 2/2: loss 3 (loss_a 1, loss_b 2); 3 iterations")
    assert lines[1].endswith("| validation: val_mae 0.125, val_r2 0.5")
    record = log_file.read_text().splitlines()
    assert len(record) == 6
    assert record[0] == "epoch 1 iteration 1: loss=3 loss_a=1 loss_b=2"
    assert record[5] == "epoch 2 iteration 6: loss=6 loss_a=2 loss_b=4"
    # a resumed run appends to the record
    TrainingLog(str(log_file)).attach(trainer2 := _trainer(losses))
    trainer2.run([0, 1, 2], max_epochs=1)
    assert len(log_file.read_text().splitlines()) == 9


def test_progress_bar_is_closed_before_validation_and_after_each_epoch(tmp_path, capsys):
    trainer = _trainer([[1.0, 1.0]])
    validator = Engine(lambda e, b: None)
    log = TrainingLog(None, validator=validator, progress_bar=True)
    log.attach(trainer)
    seen = []

    @validator.on(Events.STARTED)
    def _bar_state(engine):
        seen.append(log._bar)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine):
        validator.run([0])

    trainer.run([0, 1], max_epochs=1)
    assert seen == [None] and log._bar is None
    assert "Epoch 1/1" in capsys.readouterr().err  # the bar was drawn on stderr


def test_an_error_in_training_is_raised_and_the_file_closed(tmp_path):
    def step(engine, batch):
        if engine.state.iteration == 2:
            raise ValueError("bad batch 'x'")
        return {"loss": 1.0}

    trainer = Engine(step)
    log = TrainingLog(str(tmp_path / "it.log"), progress_bar=False)
    log.attach(trainer)
    with pytest.raises(ValueError, match="bad batch"):
        trainer.run([0, 1, 2], max_epochs=1)
    assert log._file is None and (tmp_path / "it.log").read_text() == "epoch 1 iteration 1: loss=1\n"
