"""Atomic checkpoints: resume a killed run, keep the best model. Files are never left half-written."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

__all__ = ["atomic_save", "load_model_weights", "ResumableCheckpoint", "BestModelSaver"]

logger = logging.getLogger(__name__)


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a crash leaves the old file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_model_weights(
    network: torch.nn.Module, path: str, key: str | None = "model", map_location="cpu", what: str = "checkpoint"
) -> torch.nn.Module:
    """Load ``path`` (a checkpoint dict holding the state dict under ``key``, or a bare state dict) into ``network``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message starts with ``what``, e.g. ``"fold 2: checkpoint"``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} not found; train the bundle first.")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if key and isinstance(state, dict) and key in state:
        state = state[key]
    network.load_state_dict(state)
    return network


def _state(save_dict: Mapping) -> dict:
    return {k: v.state_dict() for k, v in save_dict.items()}


class ResumableCheckpoint:
    """Save everything needed to resume (model, optimizer, scheduler, trainer state, ECDF...) and resume from it.

    At ``Events.STARTED`` it loads ``<save_dir>/<filename>`` when present (a killed run continues from its last
    checkpoint: epoch, iteration, learning-rate schedule and fitted statistics included); every ``save_interval``
    epochs and at the end it writes the file atomically. Only rank 0 writes.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict``, e.g.
            ``{"model": net, "optimizer": opt, "lr_scheduler": sched, "trainer": trainer, "ecdf": ecdf}``.
        filename: checkpoint file name.
        save_interval: epochs between saves.
        resume: load the checkpoint at start when it exists.
        engine_key: the engine this handler is attached to is saved under this key (its epoch and iteration), so
            a config need not reference the trainer from inside the trainer's own handlers; None to leave it out.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Mapping,
        filename: str = "checkpoint_last.pt",
        save_interval: int = 1,
        resume: bool = True,
        map_location: str | torch.device = "cpu",
        engine_key: str | None = "trainer",
    ) -> None:
        if not save_dict:
            raise ValueError("ResumableCheckpoint: save_dict is empty.")
        self.save_dir = save_dir
        self.save_dict = dict(save_dict)
        self.path = os.path.join(save_dir, filename)
        self.save_interval = max(1, int(save_interval))
        self.resume = resume
        self.map_location = map_location
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.engine_key and self.engine_key not in self.save_dict:
            self.save_dict[self.engine_key] = engine
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        if not os.path.isfile(self.path):
            return
        try:
            ckpt = torch.load(self.path, map_location=self.map_location, weights_only=False)
        except Exception as e:
            raise RuntimeError(f"cannot read checkpoint {self.path!r} ({e}); delete it to start afresh.") from e
        missing = [k for k in self.save_dict if k not in ckpt]
        if missing:
            raise KeyError(f"checkpoint {self.path!r} lacks {missing}; it was written by another configuration.")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=self.save_dict, checkpoint=ckpt)
        if max_epochs is not None and max_epochs > (engine.state.max_epochs or 0):
            engine.state.max_epochs = max_epochs  # allow training longer than the interrupted run planned
        logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")

    def save(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return
        atomic_save(_state(self.save_dict), self.path)


class BestModelSaver:
    """Attach to the validation evaluator: save ``save_dict`` atomically when the key metric improves.

    The file is ``{"model": state_dict, "ecdf": ..., "metric": value, "epoch": trainer epoch}`` (load it in a bundle
    with ``key_in_ckpt: "model"``). Its best value is part of ``state_dict()``; put this object in the trainer's
    :class:`ResumableCheckpoint` so a resumed run keeps comparing against the true best.

    Args:
        save_path: the output file, e.g. ``models/model.pt``.
        save_dict: objects to save, e.g. ``{"model": net, "ecdf": ecdf}``.
        metric_name: key of ``engine.state.metrics``.
        mode: ``"min"`` (MAE, loss) or ``"max"`` (R², Dice).
        trainer: the trainer, for the epoch number written with the model.
    """

    def __init__(
        self, save_path: str, save_dict: Mapping, metric_name: str, mode: str = "min", trainer: Engine | None = None
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
        self.save_path = save_path
        self.save_dict = dict(save_dict)
        self.metric_name = metric_name
        self.mode = mode
        self.trainer = trainer
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.best_metrics: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.metric_name not in engine.state.metrics:
            raise KeyError(f"metric {self.metric_name!r} not computed (metrics: {sorted(engine.state.metrics)}).")
        value = float(engine.state.metrics[self.metric_name])
        better = value < self.best if self.mode == "min" else value > self.best
        if not better or math.isnan(value):
            return
        self.best = value
        self.best_epoch = self.trainer.state.epoch if self.trainer is not None else engine.state.epoch
        self.best_metrics = {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return
        obj = _state(self.save_dict)
        obj.update({"metric_name": self.metric_name, "metric": value, "epoch": self.best_epoch})
        obj["metrics"] = dict(self.best_metrics)
        atomic_save(obj, self.save_path)
        logger.info(f"saved best model ({self.metric_name}={value:.5g}, epoch {self.best_epoch}) to {self.save_path}")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_metrics": dict(self.best_metrics)}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.best_metrics = dict(state.get("best_metrics", {}))
