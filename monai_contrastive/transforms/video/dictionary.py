# Copyright (c) MONAI Consortium and monai-contrastive contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Dictionary versions of :py:mod:`monai_contrastive.transforms.video.array`.

A training pipeline for AdaCon on EchoNet-Dynamic with two independent views of each video (``image`` and
``image_2``), each a random 32-frame clip at period 2 with its own frame jitter::

    from monai.transforms import BorderPadd, Compose, CopyItemsd, RandSpatialCropd

    views = ("image", "image_2")
    train_transforms = Compose(
        [
            LoadVideod("image", cache_dir="cache/echonet"),
            CopyItemsd("image", names="image_2"),
            *[RandClipSampled(k, length=32, period=2) for k in views],  # one instance per view: independent draws
            NormalizeVideod(views, mean="normalization.json"),
            BorderPadd(views, spatial_border=(0, 12, 12)),
            *[RandSpatialCropd(k, roi_size=(-1, 112, 112), random_size=False) for k in views],
        ]
    )

Items come from :py:func:`~monai_contrastive.data.echonet.load_echonet_filelist` (``{"image": path, "label": EF,
...}``). Use ``monai.data.DataLoader`` (or pass ``worker_init_fn=monai.data.utils.worker_init_fn``) so that
DataLoader workers draw different clips. At test time, ``AllClipsd`` turns ``image`` into (V, C, 32, H, W); the
number of clips V varies between videos, so batch one video at a time and average the V predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from monai_contrastive.transforms.video.array import (
    AllClips,
    ClipSample,
    LoadVideo,
    NormalizeVideo,
    RandClipSample,
    RandClipViews,
    RandFrameJitter,
    video_name,
)

__all__ = [
    "LoadVideod",
    "LoadVideoD",
    "LoadVideoDict",
    "ClipSampled",
    "ClipSampleD",
    "ClipSampleDict",
    "RandClipSampled",
    "RandClipSampleD",
    "RandClipSampleDict",
    "AllClipsd",
    "AllClipsD",
    "AllClipsDict",
    "NormalizeVideod",
    "NormalizeVideoD",
    "NormalizeVideoDict",
    "RandFrameJitterd",
    "RandFrameJitterD",
    "RandFrameJitterDict",
    "RandClipViewsd",
    "RandClipViewsD",
    "RandClipViewsDict",
]


def _source(d: Mapping, key: Hashable, value: Any = None) -> str | None:
    """Best description of the file behind ``d[key]``: MetaTensor meta, ``<key>_meta_dict``, then the item's path."""
    name = video_name(value)
    if name:
        return name
    meta = d.get(f"{key}_meta_dict")
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    for k in ("image", "filename"):
        if isinstance(d.get(k), str):
            return d[k]
    return None


def _apply(transform: MapTransform, d: Mapping, key: Hashable, fn: Callable[[Any], Any]) -> Any:
    """``fn(d[key])`` with errors re-raised naming the transform, the key and the file."""
    value = d[key]
    try:
        return fn(value)
    except (ValueError, TypeError, FileNotFoundError) as e:
        msg = str(e)
        src = _source(d, key, value)
        where = f" ({src})" if src and src not in msg else ""
        raise type(e)(f"{type(transform).__name__}: key {key!r}{where}: {msg}") from e


def _draw_shared(
    transform: MapTransform, sampler: ClipSample, d: Mapping, key: Hashable, num_frames: int | None
) -> int:
    """
    Draw ``sampler``'s clip start(s) from the first key's video (``num_frames`` None) and return its frame count; a
    later key must have as many frames, since one draw is shared by all keys.
    """
    if num_frames is None:
        _apply(transform, d, key, lambda x: sampler.randomize(sampler._num_starts(x)))
        return int(d[key].shape[1])
    if d[key].shape[1] != num_frames:
        raise ValueError(
            f"{type(transform).__name__}: key {key!r} has {d[key].shape[1]} frames but the first key has "
            f"{num_frames}; one draw is shared by all keys, use one instance per key for independent clips."
        )
    return num_frames


class LoadVideod(MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.video.array.LoadVideo`: replaces each video
    path under ``keys`` with the video (C=3, T, H, W).

    With ``as_tensor=False`` the numpy array gets ``{"filename_or_obj": path}`` under ``<key>_meta_dict`` (with
    MetaTensors the path is in ``.meta``), which the other video transforms use to name the file in errors.

    Args:
        keys: keys holding video paths.
        cache_dir: ``VideoCache`` folder; ``None`` decodes on every call.
        dtype: output dtype (uint8 by default; see ``LoadVideo``).
        as_tensor: ``MetaTensor`` output (default) or numpy.
        allow_missing_keys: don't raise for keys missing from the item.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection,
        cache_dir: str | None = None,
        dtype: DtypeLike | torch.dtype = np.uint8,
        as_tensor: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVideo(cache_dir=cache_dir, dtype=dtype, as_tensor=as_tensor)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            d[key] = _apply(self, d, key, self.loader)
            if not self.loader.as_tensor:
                d[f"{key}_meta_dict"] = {"filename_or_obj": str(path)}
        return d


class ClipSampled(MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.video.array.ClipSample`: (C, T, H, W) ->
    (C, length, H, W) for every key, the same start for all.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection,
        length: int = 32,
        period: int = 2,
        start: int = 0,
        pad_short: bool = True,
        pad_value: float | Sequence[float] = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.sampler = ClipSample(length=length, period=period, start=start, pad_short=pad_short, pad_value=pad_value)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _apply(self, d, key, self.sampler)
        return d


class RandClipSampled(RandomizableTransform, MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.video.array.RandClipSample`: (C, T, H, W) ->
    (C, length, H, W) from a random start.

    One start is drawn per call and used for every key (they must have the same number of frames), like every
    MONAI dictionary transform; independent views need independent instances, one per view key.

    Args:
        keys: keys of the videos.
        length: frames per clip.
        period: sampling period in frames.
        pad_short: pad videos shorter than ``length * period`` frames (EchoNet's behaviour); ``False`` raises
            for a video shorter than the clip span, naming the key and the file.
        pad_value: value of padded frames, one number or one per channel (EchoNet: the mean colour).
        allow_missing_keys: don't raise for keys missing from the item.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection,
        length: int = 32,
        period: int = 2,
        pad_short: bool = True,
        pad_value: float | Sequence[float] = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.sampler = RandClipSample(length=length, period=period, pad_short=pad_short, pad_value=pad_value)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandClipSampled:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        num_frames: int | None = None
        for key in self.key_iterator(d):
            num_frames = _draw_shared(self, self.sampler, d, key, num_frames)
            d[key] = _apply(self, d, key, lambda x: self.sampler(x, randomize=False))
        return d


class AllClipsd(MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.video.array.AllClips`: (C, T, H, W) ->
    (V, C, length, H, W), every clip for test-time averaging. V depends on the video's length.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection,
        length: int = 32,
        period: int = 2,
        stride: int = 1,
        max_clips: int | None = None,
        pad_short: bool = True,
        pad_value: float | Sequence[float] = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.sampler = AllClips(
            length=length, period=period, stride=stride, max_clips=max_clips, pad_short=pad_short, pad_value=pad_value
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _apply(self, d, key, self.sampler)
        return d


class NormalizeVideod(MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.video.array.NormalizeVideo`.

    Args:
        keys: keys of the videos or stacks of clips.
        mean: per-channel means, or the path of a normalisation JSON (then ``std=None``).
        std: per-channel standard deviations.
        dtype: output dtype.
        allow_missing_keys: don't raise for keys missing from the item.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection,
        mean: Sequence[float] | float | str,
        std: Sequence[float] | float | None = None,
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeVideo(mean=mean, std=std, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _apply(self, d, key, self.normalizer)
        return d


class RandFrameJitterd(RandomizableTransform, MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.video.array.RandFrameJitter`: one random offset per
    call, shared by every key (aligned clips stay aligned).

    Args:
        keys: keys of the clips (C, T, H, W).
        pad: padding in pixels on each side (EchoNet: 12).
        value: fill value, one number or one per channel.
        prob: probability of jittering.
        allow_missing_keys: don't raise for keys missing from the item.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection,
        pad: int = 12,
        value: float | Sequence[float] = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.jitter = RandFrameJitter(pad=pad, value=value, prob=prob)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandFrameJitterd:
        super().set_random_state(seed, state)
        self.jitter.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.jitter.randomize()
        for key in self.key_iterator(d):
            d[key] = _apply(self, d, key, lambda x: self.jitter(x, randomize=False))
        return d


class RandClipViewsd(RandomizableTransform, MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.video.array.RandClipViews`: ``num_views``
    independent random clips with frame jitter, written in one copy each.

    One set of draws per call, shared by every key (aligned videos stay aligned). Each key's (C, T, H, W) video
    becomes a (V, C, length, H, W) stack (for :py:class:`~monai_contrastive.engines.PrepareViewBatch`'s
    ``stacked_keys``), or, with ``view_keys``, view ``v`` goes to its own key ``view_keys[v]`` as (C, length, H, W)
    (for ``PrepareViewBatch(views=view_keys)``; the ARCHITECTURE's ``image``, ``image_2``, ... layout). Separate keys
    collate into separate, smaller batch tensors; see ``benchmarks/results/echo_data_pipeline.md`` for why that is
    faster than one stacked batch.

    Args:
        keys: keys of the videos (exactly one with ``view_keys``).
        num_views: V.
        length: frames per clip.
        period: sampling period in frames.
        pad: frame jitter in pixels on each side (EchoNet: 12).
        pad_value: value of padded frames and jitter borders, one number or one per channel.
        prob: probability of jittering each view.
        pad_short: pad videos shorter than ``length * period`` frames (EchoNet's behaviour).
        view_keys: output key of each view (may include the input key, e.g. ``["image", "image_2"]``).
        allow_missing_keys: don't raise for keys missing from the item.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection,
        num_views: int = 2,
        length: int = 32,
        period: int = 2,
        pad: int = 12,
        pad_value: float | Sequence[float] = 0,
        prob: float = 1.0,
        pad_short: bool = True,
        view_keys: Sequence[Hashable] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.views = RandClipViews(
            num_views=num_views,
            length=length,
            period=period,
            pad=pad,
            pad_value=pad_value,
            prob=prob,
            pad_short=pad_short,
        )
        if view_keys is not None:
            view_keys = [view_keys] if isinstance(view_keys, str) else list(view_keys)
            if len(view_keys) != num_views or len(set(view_keys)) != num_views:
                raise ValueError(f"RandClipViewsd: need {num_views} distinct view_keys, got {view_keys}.")
            if len(self.keys) != 1:
                raise ValueError(f"RandClipViewsd: view_keys needs exactly one input key, got {self.keys}.")
        self.view_keys = view_keys

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandClipViewsd:
        super().set_random_state(seed, state)
        self.views.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        num_frames: int | None = None
        for key in self.key_iterator(d):
            num_frames = _draw_shared(self, self.views, d, key, num_frames)
            if self.view_keys is None:
                d[key] = _apply(self, d, key, lambda x: self.views(x, randomize=False))
                continue
            video = d[key]
            outs = [self.views.empty(video, stacked=False) for _ in self.view_keys]
            _apply(self, d, key, lambda x: self.views.write(x, outs))
            for view_key, out in zip(self.view_keys, outs):
                d[view_key] = out
        return d


LoadVideoD = LoadVideoDict = LoadVideod
ClipSampleD = ClipSampleDict = ClipSampled
RandClipSampleD = RandClipSampleDict = RandClipSampled
AllClipsD = AllClipsDict = AllClipsd
NormalizeVideoD = NormalizeVideoDict = NormalizeVideod
RandFrameJitterD = RandFrameJitterDict = RandFrameJitterd
RandClipViewsD = RandClipViewsDict = RandClipViewsd
