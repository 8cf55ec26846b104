"""Atomic checkpoints: resume a killed run, keep the best model. Files are never left half-written."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from monai_contrastive.io import atomic_save, atomic_write_json, read_state_dict

__all__ = [
    "FinalModelSaver",
    "load_model_weights",
    "ResumableCheckpoint",
    "BestModelSaver",
]

logger = logging.getLogger(__name__)


def load_model_weights(
    network: torch.nn.Module, path: str, key: str | None = "model", map_location="cpu", what: str = "checkpoint"
) -> torch.nn.Module:
    """Load ``path`` (a checkpoint dict holding the state dict under ``key``, or a bare state dict) into ``network``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message starts with ``what``, e.g. ``"fold 2: checkpoint"``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} not found; train the bundle first.")
    network.load_state_dict(read_state_dict(path, key, key_optional=True, map_location=map_location, what=what))
    return network


_FINGERPRINT_KEY = "run_fingerprint"


def _short(value, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        start_from_loader: when the engine also has MONAI's ``CheckpointLoader`` (an explicit "start from these
            weights", which MONAI Label's ``/train`` adds for ``models/model.pt``), the run starts from its weights:
            an existing checkpoint is not resumed but renamed ``<filename>.previous.pt`` (kept, not checked against
            the fingerprint) and this run writes its own. ``False``: resume regardless.
        fingerprint: what this run trains on, e.g. ``monai_contrastive.data.items_fingerprint(train_items,
            datalist=..., fold=...)`` (a JSON-able dict). It is saved in the checkpoint; resuming a checkpoint whose
            fingerprint differs raises a ``ValueError`` that names the differing fields, instead of silently
            continuing (or reporting) a run made on other data. None: not recorded, not checked.

    Raises:
        ValueError: at resume, the checkpoint was written by a run with another ``fingerprint``.
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
        fingerprint: Mapping | None = None,
        start_from_loader: bool = True,
    ) -> None:
        if not save_dict:
            raise ValueError("ResumableCheckpoint: save_dict is empty.")
        if fingerprint is not None and not isinstance(fingerprint, Mapping):
            raise TypeError(f"ResumableCheckpoint: fingerprint must be a dict, got {type(fingerprint).__name__}.")
        # through JSON: the comparison at resume sees exactly what was saved (tuples become lists, keys strings)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), default=str)) if fingerprint is not None else None
        self.save_dir = save_dir
        self.save_dict = dict(save_dict)
        self.path = os.path.join(save_dir, filename)
        self.save_interval = max(1, int(save_interval))
        self.resume = resume
        self.map_location = map_location
        self.engine_key = engine_key
        self.start_from_loader = start_from_loader

    @staticmethod
    def _checkpoint_loader_on(engine: Engine) -> bool:
        """Whether a MONAI ``CheckpointLoader`` is attached to ``engine`` (at ``Events.STARTED``)."""
        from monai.handlers import CheckpointLoader

        handlers = getattr(engine, "_event_handlers", {}).get(Events.STARTED, [])
        return any(isinstance(h[0], CheckpointLoader) for h in handlers)

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
        if self.start_from_loader and self._checkpoint_loader_on(engine):
            previous = os.path.splitext(self.path)[0] + ".previous.pt"
            os.replace(self.path, previous)
            logger.info(
                f"a CheckpointLoader starts this run from its weights (e.g. MONAI Label /train): {self.path} is not "
                f"resumed; kept as {previous}"
            )
            return
        try:
            ckpt = torch.load(self.path, map_location=self.map_location, weights_only=False)
        except Exception as e:
            raise RuntimeError(f"cannot read checkpoint {self.path!r} ({e}); delete it to start afresh.") from e
        self._check_fingerprint(ckpt.get(_FINGERPRINT_KEY))
        missing = [k for k in self.save_dict if k not in ckpt]
        if missing:
            raise KeyError(f"checkpoint {self.path!r} lacks {missing}; it was written by another configuration.")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=self.save_dict, checkpoint=ckpt)
        if max_epochs is not None and max_epochs > (engine.state.max_epochs or 0):
            engine.state.max_epochs = max_epochs  # allow training longer than the interrupted run planned
        logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")
        if engine.state.max_epochs is not None and engine.state.epoch >= engine.state.max_epochs:
            logger.warning(
                f"{self.path} is a finished run (epoch {engine.state.epoch} of {engine.state.max_epochs}): nothing is "
                "trained. To train again, delete it or set ckpt_dir to a new folder; to train longer, raise the "
                "number of epochs / iterations."
            )

    def _check_fingerprint(self, saved) -> None:
        if self.fingerprint is None:
            return
        if saved is None:
            logger.warning(f"{self.path} records no data fingerprint (written by an older version): not checked.")
            return
        keys = sorted(set(saved) | set(self.fingerprint))
        differ = [k for k in keys if saved.get(k, "<absent>") != self.fingerprint.get(k, "<absent>")]
        if not differ:
            return
        absent = "<absent>"
        lines = "\n".join(
            f"  {k}: checkpoint {_short(saved.get(k, absent))}, this run {_short(self.fingerprint.get(k, absent))}"
            for k in differ
        )
        raise ValueError(
            f"checkpoint {self.path!r} was written by a run on other data ({', '.join(differ)} differ):\n{lines}\n"
            f"Refusing to resume it. To start afresh, delete {self.path!r} (and the model beside it) or set ckpt_dir "
            "to a new folder; to resume it, run with the settings it was made with."
        )

    def save(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return
        obj = _state(self.save_dict)
        if self.fingerprint is not None:
            obj[_FINGERPRINT_KEY] = self.fingerprint
        atomic_save(obj, self.path)


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
        plain: write the state dict of the single entry of ``save_dict`` alone (what the model zoo and MONAI Label
            load as ``models/model.pt``); the metric, epoch and all validation metrics go to ``<save_path>.json``.
    """

    def __init__(
        self,
        save_path: str,
        save_dict: Mapping,
        metric_name: str,
        mode: str = "min",
        trainer: Engine | None = None,
        plain: bool = False,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
        if plain and len(save_dict) != 1:
            raise ValueError(f"BestModelSaver(plain=True) saves one state dict, got entries {sorted(save_dict)}.")
        self.plain = plain
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
        info = {"metric_name": self.metric_name, "metric": value, "epoch": self.best_epoch}
        info["metrics"] = dict(self.best_metrics)
        if self.plain:
            atomic_save(next(iter(self.save_dict.values())).state_dict(), self.save_path)
            atomic_write_json(info, self.save_path + ".json")
        else:
            obj = _state(self.save_dict)
            obj.update(info)
            atomic_save(obj, self.save_path)
        logger.info(f"saved best model ({self.metric_name}={value:.5g}, epoch {self.best_epoch}) to {self.save_path}")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_metrics": dict(self.best_metrics)}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.best_metrics = dict(state.get("best_metrics", {}))


class FinalModelSaver:
    """At the end of a training run that completed (not one that raised), write the network's state dict alone to
    ``save_path`` atomically, and ``<save_path>.json`` with the epochs, iterations and the last loss terms: the
    output of a pretraining stage that has no validation metric to select on (MONAI's ``CheckpointSaver`` with
    ``save_final`` also writes its final file when the run fails, which a later fine-tuning would load as if it
    were the pretrained model). Rank 0 writes under DistributedDataParallel; a ``module.`` wrapper is unwrapped.

    Args:
        save_path: e.g. ``models/pretrain_lrc/model.pt``.
        network: the trained network.
    """

    def __init__(self, save_path: str, network: torch.nn.Module) -> None:
        self.save_path = save_path
        self.network = network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration == 0:
            raise RuntimeError(
                f"FinalModelSaver: the run completed without one iteration; {self.save_path} not written."
            )
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return
        net = getattr(self.network, "module", self.network)
        os.makedirs(os.path.dirname(os.path.abspath(self.save_path)), exist_ok=True)
        atomic_save(net.state_dict(), self.save_path)
        output = engine.state.output if isinstance(engine.state.output, Mapping) else {}
        losses = {
            k: float(v)
            for k, v in output.items()
            if k.startswith("loss") and isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1
        }
        info = {"epoch": engine.state.epoch, "iteration": engine.state.iteration, "last_losses": losses}
        atomic_write_json(info, self.save_path + ".json")
        logger.info(f"saved the final model (epoch {engine.state.epoch}) to {self.save_path}")
