"""Dictionary transforms: multi-view contrastive learning, loading X-rays whatever format they come in."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from monai_contrastive.transforms.array import LoadXRay

__all__ = ["RandMultiViewd", "RandMultiViewD", "RandMultiViewDict", "LoadXRayd", "LoadXRayD", "LoadXRayDict"]


class RandMultiViewd(Randomizable, MapTransform):
    """Dictionary version of :class:`~monai_contrastive.transforms.RandMultiView`.

    Runs the random dict ``transform`` ``num_views`` times on (a shallow copy of) the item and stacks ``keys`` of
    the results along a new first axis: each ``(C, ...)`` becomes ``(V, C, ...)``. Keys transformed together inside
    one call (an image and its region map) share that view's random draw; different views draw independently.
    Other keys are left as they were in the input. Pair with
    :class:`~monai_contrastive.engines.PrepareViewBatch` (``stacked_keys``).

    Args:
        keys: keys to stack (they must be produced by ``transform``).
        transform: a random dict transform (e.g. a ``Compose`` of flips, rotations, crops).
        num_views: V.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self, keys: KeysCollection, transform: Callable, num_views: int = 2, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}.")
        self.transform = transform
        self.num_views = int(num_views)

    def set_random_state(self, seed: int | None = None, state=None) -> RandMultiViewd:
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        views: dict[Hashable, list] = {k: [] for k in self.key_iterator(d)}
        for v in range(self.num_views):
            try:
                out = self.transform(dict(d))
            except Exception as e:
                src = d.get("image") if isinstance(d.get("image"), str) else getattr(d.get("image"), "meta", {})
                src = src.get("filename_or_obj", "?") if isinstance(src, Mapping) else src
                raise RuntimeError(f"RandMultiViewd: view {v} of item {src!r} failed: {e}") from e
            for k in views:
                views[k].append(torch.as_tensor(out[k]))
        for k, vs in views.items():
            d[k] = torch.stack(vs, dim=0)
        return d


RandMultiViewD = RandMultiViewDict = RandMultiViewd


class LoadXRayd(MapTransform):
    """Dictionary version of :class:`~monai_contrastive.transforms.LoadXRay`: replace each path under ``keys`` by
    the ``(1, H, W)`` float32 image (DICOM, PNG, JPEG or NIfTI; errors name the file).

    Args:
        keys: keys holding the file paths.
        scale: min-max scale each image to [0, 1].
        reader: reader for non-DICOM files (``monai.transforms.LoadImage``'s ``reader``).
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = LoadXRay.backend

    def __init__(
        self, keys: KeysCollection, scale: bool = True, reader: str | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadXRay(scale=scale, reader=reader)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


LoadXRayD = LoadXRayDict = LoadXRayd
