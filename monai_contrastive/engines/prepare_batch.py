"""The batch/view layer of the one trainer: a MONAI ``PrepareBatch`` that lays out the views of a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["PrepareViewBatch"]


def _plain(x: Any) -> Any:
    """A MetaTensor's data as a plain tensor (the loss and network need no metadata; it costs time per op)."""
    return x.as_tensor() if isinstance(x, torch.Tensor) and hasattr(x, "as_tensor") else x


def _to_device(x: Any, device, non_blocking: bool, **kwargs: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return _plain(x).to(device=device, non_blocking=non_blocking, **kwargs)
    return x


class PrepareViewBatch(PrepareBatch):
    """Lay out a (multi-)view batch as one row per view and tell the network what it needs.

    Used as ``prepare_batch`` of :class:`~monai_contrastive.engines.MultiViewTrainer` (MONAI's ``PrepareBatch``
    interface, so ``to_kwargs`` such as ``memory_format`` are honoured). It returns ``(inputs, batch, (), kwargs)``:
    ``inputs`` is ``batch[image_key]``, ``batch`` the laid-out dict handed to the loss as its "targets", and
    ``kwargs`` the keyword arguments of the network call (``network(inputs, **kwargs)``).

    Three layouts, all declared, none guessed:

    - **single view** (default, nothing declared): every tensor is moved to the device as it is; plain supervised
      training (segmentation fine-tuning, 1- or 3-channel input). ``sample_id`` ``(B,)`` and ``view`` (zeros) are
      added.
    - **views by key**: ``views=[{"image": "image", "regions": "regions"}, {"image": "image_2", "regions":
      "regions_2"}]``: view v's keys are read from the batch keys of ``views[v]`` and written under the canonical
      names (the dict keys), so view 2's region map travels with view 2. The shorthand ``views=["image",
      "image_2"]`` declares the image key of each view. Rows are view-major: row ``v * B + b`` is view v of sample b.
    - **stacked views**: ``stacked_keys=["image"]``: these keys carry a view axis ``(B, V, ...)`` (as written by
      :class:`~monai_contrastive.transforms.RandMultiViewd`); they become ``(V * B, ...)``, view-major as above.

    In both multi-view layouts the keys in ``sample_keys`` (per-sample values such as ``label``, ``(B, ...)``) are
    repeated for every view, ``sample_id`` ``(V * B,)`` (index of the sample in the batch) and ``view`` ``(V * B,)``
    are added, and every other item is kept as it is (tensors moved to the device, non-tensors untouched).

    Args:
        views: one mapping ``canonical key -> batch key`` per view, or one image key per view.
        stacked_keys: keys with a view axis at dim 1.
        sample_keys: per-sample keys repeated for every view (multi-view layouts only).
        image_key: the network input (a canonical key).
        network_kwargs: ``{network argument: key of the laid-out batch}``, e.g. ``{"key_input": "image_2"}`` for a
            momentum encoder's view or ``{"theta": "affine"}`` for a second forward under a transform.
        sample_id_key: name of the added sample index.
        view_key: name of the added view index.
    """

    def __init__(
        self,
        views: Sequence[Mapping[str, str] | str] | None = None,
        stacked_keys: Sequence[str] = (),
        sample_keys: Sequence[str] = (),
        image_key: str = "image",
        network_kwargs: Mapping[str, str] | None = None,
        sample_id_key: str = "sample_id",
        view_key: str = "view",
    ) -> None:
        self.views = [dict(v) if isinstance(v, Mapping) else {image_key: str(v)} for v in (views or [])]
        self.stacked_keys = [stacked_keys] if isinstance(stacked_keys, str) else list(stacked_keys)
        self.sample_keys = [sample_keys] if isinstance(sample_keys, str) else list(sample_keys)
        self.image_key = image_key
        self.network_kwargs = dict(network_kwargs or {})
        self.sample_id_key = sample_id_key
        self.view_key = view_key
        if self.views and self.stacked_keys:
            raise ValueError("PrepareViewBatch: declare the views either by key (views) or stacked, not both.")
        if self.views:
            names = set(self.views[0])
            for i, v in enumerate(self.views):
                if set(v) != names:
                    raise ValueError(f"PrepareViewBatch: view {i} declares keys {sorted(v)}, view 0 {sorted(names)}.")
            if image_key not in names:
                raise ValueError(f"PrepareViewBatch: the views declare no {image_key!r} (declared: {sorted(names)}).")
        declared = set(self.stacked_keys) | {k for v in self.views for k in v.values()}
        both = declared & set(self.sample_keys)
        if both:
            raise ValueError(f"PrepareViewBatch: keys {sorted(both)} are declared as view keys and as sample keys.")

    def __call__(
        self,
        batchdata: dict[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, Any], tuple, dict[str, Any]]:
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"PrepareViewBatch expects dict batches, got {type(batchdata).__name__}.")
        wanted = set(self.stacked_keys) | set(self.sample_keys) | {k for v in self.views for k in v.values()}
        missing = sorted(k for k in wanted if k not in batchdata)
        if missing:
            raise KeyError(f"batch has no key(s) {missing} declared by PrepareViewBatch (keys: {sorted(batchdata)}).")
        batch = {k: _to_device(v, device, non_blocking, **kwargs) for k, v in batchdata.items()}
        if self.views:
            out = self._by_key(batch)
        elif self.stacked_keys:
            out = self._stacked(batch)
        else:
            out = batch
            if self.image_key not in out:
                raise KeyError(f"batch has no {self.image_key!r} (keys: {sorted(out)}).")
            b = out[self.image_key].shape[0]
            dev = out[self.image_key].device
            out.setdefault(self.sample_id_key, torch.arange(b, device=dev))
            out.setdefault(self.view_key, torch.zeros(b, dtype=torch.long, device=dev))
        net_kwargs = {}
        for arg, key in self.network_kwargs.items():
            if key not in out:
                raise KeyError(f"network argument {arg!r} reads {key!r}, which the batch lacks (keys: {sorted(out)}).")
            net_kwargs[arg] = out[key]
        return out[self.image_key], out, (), net_kwargs

    def _repeat_samples(self, batch: dict, out: dict, b: int, n_views: int, skip: set[str]) -> None:
        for k in self.sample_keys:
            v = batch[k]
            if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != b:
                shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"sample key {k!r} must be a tensor of {b} rows (one per sample), got {shape}.")
            out[k] = v.repeat(n_views, *([1] * (v.ndim - 1)))
        for k, v in batch.items():
            if k not in out and k not in skip:
                out[k] = v
        dev = out[self.image_key].device
        out[self.sample_id_key] = torch.arange(b, device=dev).repeat(n_views)
        out[self.view_key] = torch.arange(n_views, device=dev).repeat_interleave(b)

    def _by_key(self, batch: dict) -> dict:
        n_views = len(self.views)
        first = batch[self.views[0][self.image_key]]
        b = first.shape[0]
        out: dict[str, Any] = {}
        for name in self.views[0]:
            parts = [batch[v[name]] for v in self.views]
            for v, p in zip(self.views, parts):
                if not isinstance(p, torch.Tensor) or p.ndim == 0 or p.shape[0] != b:
                    shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
                    raise ValueError(
                        f"view key {v[name]!r} must be a tensor of {b} rows (one per sample), got {shape}."
                    )
            out[name] = torch.cat(parts, dim=0)
        skip = {k for v in self.views for k in v.values()}
        self._repeat_samples(batch, out, b, n_views, skip)
        return out

    def _stacked(self, batch: dict) -> dict:
        first = batch[self.stacked_keys[0]]
        if not isinstance(first, torch.Tensor) or first.ndim < 2:
            raise ValueError(f"stacked-view key {self.stacked_keys[0]!r} must be (B, V, ...).")
        b, n_views = first.shape[:2]
        out: dict[str, Any] = {}
        for k in self.stacked_keys:
            v = batch[k]
            if v.shape[:2] != (b, n_views):
                raise ValueError(f"stacked-view key {k!r} has shape {tuple(v.shape)}, expected ({b}, {n_views}, ...).")
            out[k] = v.transpose(0, 1).reshape(n_views * b, *v.shape[2:])
        if self.image_key not in out:
            raise KeyError(f"stacked keys {self.stacked_keys} do not include the network input {self.image_key!r}.")
        self._repeat_samples(batch, out, b, n_views, set(self.stacked_keys))
        return out
