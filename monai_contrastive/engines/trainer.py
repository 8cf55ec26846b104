"""The one trainer of every method: MONAI's ``SupervisedTrainer`` with a view layer and multi-term losses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys as Keys

from monai_contrastive.engines.prepare_batch import PrepareViewBatch

__all__ = ["MultiViewTrainer", "loss_terms_output"]


def loss_terms_output(output: Any) -> dict[str, float]:
    """``output_transform`` for StatsHandler/TensorBoardStatsHandler/ProgressBar: the total loss and every term."""
    if isinstance(output, list):  # decollated
        output = output[0]
    terms = {Keys.LOSS: output[Keys.LOSS]}
    terms.update({k: v for k, v in output.items() if k.startswith("loss_")})
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in terms.items()}


class _RecordTerms:
    """Calls the configured loss; a ``(total, {term: value})`` result has its terms put in ``engine.state.output``.

    ``SupervisedTrainer._iteration`` calls ``loss_function(pred, targets).mean()`` between its forward and backward
    (with autocast, gradient scaling and accumulation); wrapping the loss keeps that whole iteration MONAI's own.
    """

    def __init__(self, loss: Callable, engine: SupervisedTrainer) -> None:
        self.loss = loss
        self.engine = engine

    def __call__(self, pred: Any, targets: Any) -> torch.Tensor:
        result = self.loss(pred, targets)
        total, terms = result if isinstance(result, tuple) else (result, {})
        output = self.engine.state.output
        for k, v in terms.items():
            output[k if k.startswith("loss_") else f"loss_{k}"] = v.detach() if isinstance(v, torch.Tensor) else v
        return total


class MultiViewTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for every method of the package: contrastive, multi-task and plain supervised.

    One iteration is MONAI's own (``SupervisedTrainer._iteration``: autocast, gradient scaler, accumulation,
    ``torch.compile``): ``prepare_batch`` lays out the batch, ``inferer(inputs, network, **kwargs)`` runs the network,
    ``loss_function(outputs, targets)`` computes the loss, the total is back-propagated. What differs from the parent
    is only the defaults and the loss contract:

    - ``prepare_batch`` defaults to :class:`~monai_contrastive.engines.PrepareViewBatch` with no views declared (a
      plain single-view batch); declare views, per-sample keys and network keyword arguments there. Its ``targets``
      is the laid-out batch dict, so the loss sees every key (labels, region maps, ``sample_id``, ``view``...).
    - the network may return a dict of named outputs (``pred``, ``embedding``, ``query``/``key``/``queue``...), and
      may own extra machinery (a momentum encoder and queue, a second forward on a warped input).
    - the loss may return ``(total, {term: value})`` (e.g. :class:`~monai_contrastive.losses.MultiTermLoss`); each
      term is put in ``engine.state.output`` as ``loss_<term>`` (log them with ``output_transform=
      monai_contrastive.engines.loss_terms_output``) and the total is back-propagated.
    - ``decollate`` defaults to False (contrastive outputs are batch-level).

    The trainer knows no method and no task: views, network, loss and handlers come from the config.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("prepare_batch") is None:
            kwargs["prepare_batch"] = PrepareViewBatch()
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        self.loss_function = _RecordTerms(self.loss_function, self)
