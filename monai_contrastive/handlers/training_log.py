"""The training console a person reads: a progress bar and one line per epoch; every iteration goes to a file."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["TrainingLog"]


def _scalars(output: Any) -> dict[str, float]:
    """The scalar ``loss*`` entries of an engine output (a dict, or the first item of a decollated list)."""
    if isinstance(output, list) and output:
        output = output[0]
    if not isinstance(output, Mapping):
        return {"loss": float(output)} if isinstance(output, (int, float, torch.Tensor)) else {}
    out = {}
    for k, v in output.items():
        if str(k).startswith("loss") and isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1:
            out[str(k)] = float(v.item() if isinstance(v, torch.Tensor) else v)
    return out


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class TrainingLog:
    """Console and log file of a training run, in place of a per-iteration ``StatsHandler`` plus a ``ProgressBar``
    (whose iteration lines and redrawn bar share the same console lines).

    - Console: a progress bar for the running epoch (cleared when the epoch ends, and before a validation), then one
      line per epoch through the logger ``name``: the mean of every loss term over the epoch, the iterations and
      the time, and, when ``validator`` ran in that epoch, its metrics and the best key metric so far.
    - ``log_file``: one line per iteration (epoch, iteration, every loss term), appended, so a resumed run continues
      the record. TensorBoard (``TensorBoardStatsHandler``) keeps the per-iteration curves.

    Args:
        log_file: the per-iteration record, e.g. ``runs/train_iterations.log``; None: not written.
        output_transform: ``engine.state.output`` -> ``{term: float}``; default: its scalar ``loss*`` entries
            (``monai_contrastive.engines.loss_terms_output`` gives the same).
        validator: the evaluator a ``ValidationHandler`` runs, for its metrics in the epoch line.
        name: the logger of the epoch lines (routed by the bundle's ``logging.conf``).
        progress_bar: draw the bar (off when stderr is not a terminal and ``"auto"``; ``True``/``False`` force it).
    """

    def __init__(
        self,
        log_file: str | None = None,
        output_transform: Callable[[Any], Mapping[str, float]] = _scalars,
        validator: Engine | None = None,
        name: str = "monai_contrastive.training",
        progress_bar: bool | str = "auto",
    ) -> None:
        self.log_file = log_file
        self.output_transform = output_transform
        self.validator = validator
        self.logger = logging.getLogger(name)
        self.progress_bar = sys.stderr.isatty() if progress_bar == "auto" else bool(progress_bar)
        self._bar = None
        self._file = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._epoch_start = 0.0
        self._val_metrics: dict[str, float] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._on_exception)
        if self.validator is not None:
            self.validator.add_event_handler(Events.STARTED, self._close_bar)
            self.validator.add_event_handler(Events.COMPLETED, self._validated)

    def _open(self, engine: Engine) -> None:
        if self.log_file and self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_file)), exist_ok=True)
            self._file = open(self.log_file, "a", buffering=1)

    def _epoch_started(self, engine: Engine) -> None:
        self._sums, self._count, self._val_metrics = {}, 0, None
        self._epoch_start = time.perf_counter()
        if self.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=engine.state.epoch_length,
                desc=f"Epoch {engine.state.epoch}/{engine.state.max_epochs}",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def _iteration_completed(self, engine: Engine) -> None:
        terms = dict(self.output_transform(engine.state.output))
        for k, v in terms.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1
        if self._file is not None:
            values = " ".join(f"{k}={_fmt(float(v))}" for k, v in terms.items())
            self._file.write(f"epoch {engine.state.epoch} iteration {engine.state.iteration}: {values}\n")
        if self._bar is not None:
            self._bar.update(1)
            if "loss" in terms:
                self._bar.set_postfix_str(f"loss={_fmt(float(terms['loss']))}", refresh=False)

    def _close_bar(self, engine: Engine | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _validated(self, validator: Engine) -> None:
        self._val_metrics = {
            k: float(v) for k, v in validator.state.metrics.items() if isinstance(v, (int, float, torch.Tensor))
        }

    def epoch_summary(self, engine: Engine) -> str:
        """The console line of the epoch that just ended."""
        seconds = time.perf_counter() - self._epoch_start
        means = {k: v / max(self._count, 1) for k, v in self._sums.items()}
        total = f"loss {_fmt(means.pop('loss'))}" if "loss" in means else ""
        terms = ", ".join(f"{k} {_fmt(v)}" for k, v in means.items())
        losses = f"{total} ({terms})" if total and terms else total or terms or "no loss terms"
        line = (
            f"Epoch {engine.state.epoch}/{engine.state.max_epochs}: {losses}; "
            f"{self._count} iterations, {seconds:.1f} s"
        )
        if self._val_metrics:
            line += " | validation: " + ", ".join(f"{k} {_fmt(v)}" for k, v in self._val_metrics.items())
            state = self.validator.state if self.validator is not None else None
            key = getattr(state, "key_metric_name", None)
            best, best_epoch = getattr(state, "best_metric", None), getattr(state, "best_metric_epoch", -1)
            if key and best is not None and best_epoch is not None and best_epoch >= 0:
                line += f" (best {key} {_fmt(float(best))} at epoch {best_epoch})"
        return line

    def _epoch_completed(self, engine: Engine) -> None:
        self._close_bar()
        self.logger.info(self.epoch_summary(engine))

    def _close(self, engine: Engine | None = None) -> None:
        self._close_bar()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _on_exception(self, engine: Engine, e: Exception) -> None:
        self._close()
        raise e
