"""Ignite trainer for multi-view contrastive training on MONAI's SupervisedTrainer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

__all__ = ["MultiViewTrainer", "flatten_views", "loss_terms_output"]


def _to_device(batch: dict, device, non_blocking: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.as_tensor() if hasattr(v, "as_tensor") else v
            out[k] = v.to(device, non_blocking=non_blocking)
    return out


def flatten_views(
    batch: dict[str, torch.Tensor],
    stacked_keys: Sequence[str] = ("image",),
    view_keys: Sequence[str] | None = None,
    image_key: str = "image",
) -> dict[str, torch.Tensor]:
    """Turn a multi-view batch into one row per view.

    Two layouts are accepted:

    - stacked: ``batch[k]`` for ``k in stacked_keys`` is ``(B, V, ...)`` (views of a sample stacked by a transform such
      as :class:`~monai_contrastive.transforms.RandMultiViewd`); they become ``(B * V, ...)`` in sample-major order.
    - separate keys: ``view_keys = ["image", "image_2", ...]`` each ``(B, C, ...)``; they are concatenated view-major
      into ``batch[image_key]`` ``(V * B, C, ...)``.

    Every other tensor whose first dimension is B (labels, ECDF values, intensities...) is repeated to match, and
    ``sample_id`` ``(B * V,)`` (index of the sample in the batch) and ``view`` ``(B * V,)`` are added.
    """
    if view_keys:
        missing = [k for k in view_keys if k not in batch]
        if missing:
            raise KeyError(f"batch has no view key(s) {missing} (keys: {sorted(batch)}).")
        n_views = len(view_keys)
        b = batch[view_keys[0]].shape[0]
        out = {image_key: torch.cat([batch[k] for k in view_keys], dim=0)}
        device = out[image_key].device
        out["sample_id"] = torch.arange(b, device=device).repeat(n_views)
        out["view"] = torch.arange(n_views, device=device).repeat_interleave(b)
        skip = set(view_keys)
        for k, v in batch.items():
            if k in skip:
                continue
            out[k] = v.repeat(n_views, *([1] * (v.ndim - 1))) if v.ndim > 0 and v.shape[0] == b else v
        return out
    missing = [k for k in stacked_keys if k not in batch]
    if missing:
        raise KeyError(f"batch has no stacked-view key(s) {missing} (keys: {sorted(batch)}).")
    first = batch[stacked_keys[0]]
    b, n_views = first.shape[0], first.shape[1]
    out = {}
    for k in stacked_keys:
        v = batch[k]
        if v.shape[:2] != (b, n_views):
            raise ValueError(f"stacked-view key {k!r} has shape {tuple(v.shape)}, expected ({b}, {n_views}, ...).")
        out[k] = v.reshape(b * n_views, *v.shape[2:])
    device = first.device
    out["sample_id"] = torch.arange(b, device=device).repeat_interleave(n_views)
    out["view"] = torch.arange(n_views, device=device).repeat(b)
    for k, v in batch.items():
        if k in out:
            continue
        out[k] = v.repeat_interleave(n_views, dim=0) if v.ndim > 0 and v.shape[0] == b else v
    return out


def loss_terms_output(output: Any) -> dict[str, float]:
    """``output_transform`` for StatsHandler/TensorBoardStatsHandler/ProgressBar: the total loss and every term."""
    if isinstance(output, list):  # decollated
        output = output[0]
    terms = {Keys.LOSS: output[Keys.LOSS]}
    terms.update({k: v for k, v in output.items() if k.startswith("loss_")})
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in terms.items()}


class MultiViewTrainer(SupervisedTrainer):
    """SupervisedTrainer for multi-view contrastive (and multi-task) training.

    Per iteration: move the tensors of the batch to the device, flatten the views with :func:`flatten_views`, run the
    network once on all views (``network(batch[image_key])`` returns a dict of named outputs), call
    ``loss_function(outputs, batch)`` which returns ``(total, {term_name: value})``, back-propagate the total. The
    total is ``engine.state.output["loss"]``, each term ``engine.state.output[term_name]`` (log them with
    ``output_transform=monai_contrastive.engines.loss_terms_output``). The trainer knows no method: the views, the
    network and the loss come from the config. Accepts every argument of ``SupervisedTrainer``, plus:

    Args:
        image_key: network input key.
        stacked_keys: keys carrying a view axis ``(B, V, ...)``.
        view_keys: alternatively, one key per view.
        label_key: key reported as ``engine.state.output["label"]``.
    """

    def __init__(
        self,
        *args,
        image_key: str = "image",
        stacked_keys: Sequence[str] = ("image",),
        view_keys: Sequence[str] | None = None,
        label_key: str = "label",
        **kwargs,
    ) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        self.image_key = image_key
        self.stacked_keys = tuple(stacked_keys)
        self.view_keys = tuple(view_keys) if view_keys else None
        self.label_key = label_key

    def _iteration(self, engine: MultiViewTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if not isinstance(batchdata, dict):
            raise TypeError(f"MultiViewTrainer expects dict batches, got {type(batchdata).__name__}.")
        batch = _to_device(batchdata, engine.state.device, engine.non_blocking)
        batch = flatten_views(batch, self.stacked_keys, self.view_keys, self.image_key)
        inputs = batch[self.image_key]
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: batch.get(self.label_key)}

        def _compute_pred_loss():
            outputs = engine.inferer(inputs, engine.network)
            engine.state.output[Keys.PRED] = outputs
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            result = engine.loss_function(outputs, batch)
            loss, terms = result if isinstance(result, tuple) else (result, {})
            engine.state.output[Keys.LOSS] = loss
            for k, v in terms.items():
                engine.state.output[k if k.startswith("loss_") else f"loss_{k}"] = v.detach()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                _compute_pred_loss()
            engine.scaler.scale(engine.state.output[Keys.LOSS]).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            _compute_pred_loss()
            engine.state.output[Keys.LOSS].backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
