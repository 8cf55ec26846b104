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
Array transforms for echocardiogram videos shaped (C, T, H, W), following the EchoNet-Dynamic data pipeline
(Ouyang et al., Nature 2020) that AdaCon (Dai et al., 2023) trains its LVEF regressor with: decode, sample a clip of
``length`` frames every ``period`` frames (random start in training, every start at test time), normalise per
channel.

Frame jitter (EchoNet's ``pad=12`` augmentation: pad 12 pixels with the mean colour, then crop the original size at
random) is :py:class:`RandFrameJitter`. MONAI's ``BorderPad`` + ``RandSpatialCrop(roi_size=(-1, 112, 112))`` compute the
same thing (they treat T, H and W of a (C, T, H, W) array as spatial dimensions) but allocate the padded video and
run on every item of every epoch; ``RandFrameJitter`` writes the crop directly, on uint8, which is what lets the
cached pipeline deliver clips several times faster (``benchmarks/results/echo_data_pipeline.md``).

The fast training pipeline keeps clips uint8 end to end (``LoadVideo`` from a ``VideoCache`` -> ``RandClipViews``, which
does ``RandClipSample`` + ``RandFrameJitter`` for every view in one copy) and normalises on the accelerator with
:py:class:`~monai_contrastive.networks.InputNormalization` inside the network: a uint8 clip is a quarter of the bytes
to copy between DataLoader workers and to the GPU. Padding with ``pad_value`` = the rounded mean colour then gives
EchoNet's padding (0 after normalisation) to within half a grey level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform, Transform
from monai.utils import get_equivalent_dtype

from monai_contrastive.data.video import VideoCache, read_video
from monai_contrastive.data.video_stats import load_normalization

__all__ = [
    "LoadVideo",
    "ClipSample",
    "RandClipSample",
    "AllClips",
    "NormalizeVideo",
    "RandFrameJitter",
    "RandClipViews",
    "clip_starts",
    "video_name",
]


def video_name(img: Any) -> str | None:
    """The source file of ``img`` when it is a MetaTensor from :py:class:`LoadVideo`, else ``None``."""
    meta = getattr(img, "meta", None)
    if isinstance(meta, dict):
        name = meta.get("filename_or_obj")
        return str(name) if name else None
    return None


def _where(img: Any) -> str:
    name = video_name(img)
    return f" ({name})" if name else ""


def _check_video(img: Any, who: str, ndim: int = 4) -> None:
    if not isinstance(img, (np.ndarray, torch.Tensor)) or img.ndim != ndim:
        shape = tuple(img.shape) if hasattr(img, "shape") else type(img).__name__
        raise ValueError(f"{who}{_where(img)}: expected a video shaped (C, T, H, W), got {shape}.")


def clip_starts(num_frames: int, length: int, period: int, pad_short: bool = True) -> tuple[int, int]:
    """
    Valid clip starts for a video of ``num_frames`` frames, following EchoNet-Dynamic (``echonet.datasets.Echo``).

    A clip takes frames ``start + period * i`` for ``i < length``. With ``pad_short`` a video shorter than
    ``length * period`` frames is treated as zero-padded at the end to exactly that many frames (EchoNet's rule), so
    at least one start exists. Without it, a video shorter than the clip span ``(length - 1) * period + 1`` raises.

    Returns:
        ``(num_starts, padded_frames)``: starts ``0 .. num_starts - 1`` are valid; ``padded_frames`` is the frame
        count after padding (``num_frames`` when no padding applies).

    Raises:
        ValueError: the video is too short and ``pad_short`` is False, or the arguments are invalid.
    """
    if length < 1 or period < 1:
        raise ValueError(f"length and period must be >= 1, got length={length}, period={period}.")
    if num_frames < 1:
        raise ValueError("the video has no frames.")
    span = (length - 1) * period + 1
    padded = max(num_frames, length * period) if pad_short else num_frames
    if padded < span:
        raise ValueError(
            f"video has {num_frames} frames, shorter than one clip of {length} frames at period {period} "
            f"({span} frames); use pad_short=True to zero-pad it as EchoNet-Dynamic does."
        )
    return padded - span + 1, padded


def _fill_values(value: float | Sequence[float], channels: int, who: str) -> np.ndarray:
    """``value`` as a (C, 1, 1, 1) array (one value for every channel, or one per channel)."""
    v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if v.ndim != 1 or len(v) not in (1, channels):
        raise ValueError(f"{who}: pad value must be a number or one per channel ({channels}), got {value!r}.")
    return np.broadcast_to(v, (channels,)).reshape(-1, 1, 1, 1).copy()


def _gather_frames(img: NdarrayOrTensor, index: np.ndarray, pad_value: float | Sequence[float] = 0) -> NdarrayOrTensor:
    """``img[:, index]`` along T with any index >= T giving a frame of ``pad_value`` (per channel); ``index`` may be
    (L,) or (V, L)."""
    num_frames = img.shape[1]
    beyond = index >= num_frames
    safe = np.minimum(index, num_frames - 1)
    if isinstance(img, torch.Tensor):
        if safe.ndim == 1:
            out = torch.index_select(img, 1, torch.as_tensor(safe, device=img.device))
        else:
            out = img[:, torch.as_tensor(safe, device=img.device)]  # (C, V, L, H, W)
        if beyond.any():
            fill = torch.as_tensor(_fill_values(pad_value, out.shape[0], "ClipSample"), dtype=out.dtype)
            out[:, torch.as_tensor(beyond, device=img.device)] = fill.to(out.device)
        return out
    out = np.take(img, safe, axis=1)
    if beyond.any():
        out[:, beyond] = _fill_values(pad_value, out.shape[0], "ClipSample").astype(out.dtype)
    return out


class LoadVideo(Transform):
    """
    Load a video file as a (C=3, T, H, W) RGB array, decoding it with OpenCV or reading it from a
    :py:class:`~monai_contrastive.data.video.VideoCache`.

    The default ``dtype`` is uint8, not float32 like ``LoadImage``: a whole EchoNet video is ~7 MB as uint8 and four
    times that as float32, while training keeps only a 32-frame clip of it. Sample the clip first, then let
    :py:class:`NormalizeVideo` convert it to float32.

    Args:
        cache_dir: read through a ``VideoCache`` in this folder (decode once, memory-map afterwards); ``None``
            decodes the file on every call.
        dtype: output dtype (numpy or torch), e.g. ``np.uint8`` (default) or ``np.float32`` (0-255 scale).
        as_tensor: return a ``MetaTensor`` whose ``meta["filename_or_obj"]`` is the path (later transforms name it in
            their errors); ``False`` returns a numpy array.

    Raises:
        FileNotFoundError, ValueError: missing or undecodable video, naming its path.
    """

    def __init__(self, cache_dir: str | None = None, dtype: DtypeLike | torch.dtype = np.uint8, as_tensor: bool = True):
        self.cache = VideoCache(cache_dir) if cache_dir else None
        self.dtype = get_equivalent_dtype(dtype, np.ndarray)
        self.as_tensor = as_tensor

    def __call__(self, filename: str) -> NdarrayOrTensor:
        if not isinstance(filename, (str, bytes)) and not hasattr(filename, "__fspath__"):
            raise TypeError(f"LoadVideo expects a video path, got {type(filename).__name__}.")
        filename = str(filename)
        video = self.cache.get(filename) if self.cache is not None else read_video(filename)
        if video.dtype != self.dtype:
            video = video.astype(self.dtype)
        if not self.as_tensor:
            return video
        meta = {
            "filename_or_obj": filename,
            "spatial_shape": np.asarray(video.shape[1:]),
            "original_channel_dim": 0,
            "num_frames": int(video.shape[1]),
        }
        # a memory-mapped cache entry is copy-on-write, so sharing its memory with the tensor is safe
        return MetaTensor(torch.from_numpy(video), meta=meta)


class ClipSample(Transform):
    """
    Take the clip of ``length`` frames spaced ``period`` frames apart that starts at frame ``start``.

    Input (C, T, H, W), output (C, length, H, W), same type and dtype; frame ``i`` of the clip is frame
    ``start + period * i`` of the video. Short videos follow :py:func:`clip_starts`: with ``pad_short`` (default)
    frames past the end are all zeros (in the input's units: apply :py:class:`NormalizeVideo` first to get EchoNet's
    mean-colour padding), otherwise a video shorter than the clip span raises.

    Args:
        length: frames per clip (EchoNet/AdaCon: 32).
        period: sampling period in frames (EchoNet/AdaCon: 2).
        start: first frame.
        pad_short: pad videos shorter than ``length * period`` frames (EchoNet's behaviour).
        pad_value: value of the padded frames, one number or one per channel. EchoNet pads normalised videos with
            0, the mean colour; on a uint8 video pass the rounded per-channel mean to get the same.

    Raises:
        ValueError: the video is too short (``pad_short=False``) or ``start`` is past the last valid start; the
            message names the file when the input is a MetaTensor from :py:class:`LoadVideo`.
    """

    def __init__(
        self,
        length: int = 32,
        period: int = 2,
        start: int = 0,
        pad_short: bool = True,
        pad_value: float | Sequence[float] = 0,
    ) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}.")
        self.length, self.period, self.start, self.pad_short = int(length), int(period), int(start), pad_short
        self.pad_value = pad_value

    def _num_starts(self, img: NdarrayOrTensor) -> int:
        _check_video(img, type(self).__name__)
        try:
            return clip_starts(int(img.shape[1]), self.length, self.period, self.pad_short)[0]
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}{_where(img)}: {e}") from None

    def _sample(self, img: NdarrayOrTensor, start: int) -> NdarrayOrTensor:
        out = _gather_frames(img, start + self.period * np.arange(self.length), self.pad_value)
        if isinstance(out, MetaTensor):
            out.meta["clip_start"] = int(start)
        return out

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        num_starts = self._num_starts(img)
        if self.start >= num_starts:
            raise ValueError(
                f"ClipSample{_where(img)}: start={self.start} is past the last valid start {num_starts - 1} for a "
                f"video of {img.shape[1]} frames (length={self.length}, period={self.period})."
            )
        return self._sample(img, self.start)


class RandClipSample(RandomizableTransform, ClipSample):
    """
    Take a clip of ``length`` frames every ``period`` frames from a uniformly random start, as EchoNet-Dynamic and
    AdaCon do in training (``start ~ U{0, ..., T' - (length - 1) * period - 1}``, T' the padded frame count).

    Input (C, T, H, W), output (C, length, H, W); see :py:class:`ClipSample` for padding and errors. The start drawn
    by the last call is ``self.start``.

    Args:
        length: frames per clip.
        period: sampling period in frames.
        pad_short: pad videos shorter than ``length * period`` frames (EchoNet's behaviour).
        pad_value: value of the padded frames (see :py:class:`ClipSample`).
    """

    def __init__(
        self, length: int = 32, period: int = 2, pad_short: bool = True, pad_value: float | Sequence[float] = 0
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        ClipSample.__init__(self, length=length, period=period, start=0, pad_short=pad_short, pad_value=pad_value)

    def randomize(self, data: int) -> None:  # type: ignore[override]
        """Draw a start among ``data`` valid starts."""
        self._do_transform = True  # a clip is always taken; skip the base class's extra draw for ``prob``
        self.start = int(self.R.randint(data))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:  # type: ignore[override]
        """
        Args:
            img: video (C, T, H, W).
            randomize: draw a new start; ``False`` reuses the last one (e.g. for a second, aligned key).
        """
        num_starts = self._num_starts(img)
        if randomize:
            self.randomize(num_starts)
        elif self.start >= num_starts:
            raise ValueError(f"RandClipSample{_where(img)}: start {self.start} is not valid for this video.")
        return self._sample(img, self.start)


class AllClips(ClipSample):
    """
    Every clip of a video, stacked for test-time averaging of the predictions (EchoNet-Dynamic ``clips="all"``).

    Input (C, T, H, W), output (V, C, length, H, W) with clip ``v`` starting at frame ``starts[v]``, where ``starts``
    are ``0, stride, 2 * stride, ...`` over the valid starts of :py:func:`clip_starts`, thinned to ``max_clips``
    evenly spaced ones when given. For a MetaTensor input ``meta["clip_starts"]`` lists the starts.

    Args:
        length: frames per clip.
        period: sampling period in frames.
        stride: distance between consecutive starts (EchoNet: 1).
        max_clips: keep at most this many clips (evenly spread), bounding memory for long videos.
        pad_short: pad videos shorter than ``length * period`` frames.
        pad_value: value of the padded frames (see :py:class:`ClipSample`).
    """

    def __init__(
        self,
        length: int = 32,
        period: int = 2,
        stride: int = 1,
        max_clips: int | None = None,
        pad_short: bool = True,
        pad_value: float | Sequence[float] = 0,
    ) -> None:
        super().__init__(length=length, period=period, start=0, pad_short=pad_short, pad_value=pad_value)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}.")
        if max_clips is not None and max_clips < 1:
            raise ValueError(f"max_clips must be >= 1 or None, got {max_clips}.")
        self.stride, self.max_clips = int(stride), max_clips

    def starts(self, num_frames: int) -> np.ndarray:
        """The clip starts used for a video of ``num_frames`` frames."""
        num_starts = clip_starts(num_frames, self.length, self.period, self.pad_short)[0]
        starts = np.arange(0, num_starts, self.stride)
        if self.max_clips is not None and len(starts) > self.max_clips:
            starts = starts[np.round(np.linspace(0, len(starts) - 1, self.max_clips)).astype(int)]
        return starts

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        self._num_starts(img)  # validates, naming the file
        starts = self.starts(int(img.shape[1]))
        index = starts[:, None] + self.period * np.arange(self.length)[None]  # (V, L)
        clips = _gather_frames(img, index, self.pad_value)  # (C, V, L, H, W)
        if isinstance(clips, torch.Tensor):
            clips = clips.transpose(0, 1).contiguous()
            if isinstance(clips, MetaTensor):
                clips.meta["clip_starts"] = starts.tolist()
            return clips
        return np.ascontiguousarray(np.swapaxes(clips, 0, 1))


class NormalizeVideo(Transform):
    """
    Per-channel normalisation ``(x - mean[c]) / std[c]`` of a (C, T, H, W) video or (V, C, T, H, W) stack of clips,
    with the statistics of :py:func:`~monai_contrastive.data.video_stats.fit_video_normalization` (0-255 scale).

    Args:
        mean: one value per channel (or one for all), or the path of a JSON written by
            :py:func:`~monai_contrastive.data.video_stats.save_normalization` (then ``std`` must be ``None``).
        std: one value per channel (or one for all).
        dtype: output dtype (float32).

    Raises:
        ValueError: the channel count differs from the statistics (naming the file when known).
    """

    def __init__(
        self,
        mean: Sequence[float] | float | str,
        std: Sequence[float] | float | None = None,
        dtype: DtypeLike | torch.dtype = np.float32,
    ) -> None:
        if isinstance(mean, str) or hasattr(mean, "__fspath__"):
            if std is not None:
                raise ValueError("NormalizeVideo: give either a statistics file as mean, or mean and std.")
            mean, std = load_normalization(str(mean))
        if std is None:
            raise ValueError("NormalizeVideo: std is required when mean is not a statistics file.")
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape or np.any(self.std <= 0):
            raise ValueError(f"NormalizeVideo: mean and std must be equal-length, std > 0; got {mean}, {std}.")
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if not isinstance(img, (np.ndarray, torch.Tensor)) or img.ndim not in (4, 5):
            shape = tuple(img.shape) if hasattr(img, "shape") else type(img).__name__
            raise ValueError(f"NormalizeVideo{_where(img)}: expected (C, T, H, W) or (V, C, T, H, W), got {shape}.")
        channels = img.shape[-4]
        if len(self.mean) not in (1, channels):
            raise ValueError(
                f"NormalizeVideo{_where(img)}: the video has {channels} channels but the statistics have "
                f"{len(self.mean)}."
            )
        shape = (-1, 1, 1, 1)
        if isinstance(img, torch.Tensor):
            dtype = get_equivalent_dtype(self.dtype, torch.Tensor)
            mean = torch.as_tensor(self.mean, dtype=dtype, device=img.device).reshape(shape)
            scale = torch.as_tensor(1.0 / self.std, dtype=dtype, device=img.device).reshape(shape)
            out = img.to(dtype=dtype, copy=True)
            return out.sub_(mean).mul_(scale)
        dtype = get_equivalent_dtype(self.dtype, np.ndarray)
        out = img.astype(dtype, copy=True)
        out -= self.mean.astype(dtype).reshape(shape)
        out *= (1.0 / self.std).astype(dtype).reshape(shape)
        return out


class RandFrameJitter(RandomizableTransform):
    """
    EchoNet-Dynamic's frame jitter: pad every frame by ``pad`` pixels on each side with ``value`` and crop the original
    H x W at a uniformly random offset, the same offset for all frames of the clip (``echonet.datasets.Echo(pad=12)``).

    Equivalent to MONAI ``BorderPad(spatial_border=(0, pad, pad), value=value)`` followed by
    ``RandSpatialCrop(roi_size=(-1, H, W), random_size=False)`` (both offsets uniform in ``0 .. 2 * pad``), but the
    crop is written directly into one output array of the input's dtype, without the padded intermediate. Works on
    numpy arrays and tensors (MetaTensor metadata is kept), any leading dimensions: (..., H, W).

    Args:
        pad: padding in pixels on each side (EchoNet: 12).
        value: fill value, one number or one per channel (dimension 0). EchoNet pads normalised videos with 0, the
            mean colour; for a uint8 clip pass the rounded per-channel mean.
        prob: probability of jittering (EchoNet: always).
    """

    def __init__(self, pad: int = 12, value: float | Sequence[float] = 0, prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob=prob)
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}.")
        self.pad, self.value = int(pad), value
        self.shift = (0, 0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.shift = tuple(int(v) - self.pad for v in self.R.randint(0, 2 * self.pad + 1, size=2))  # type: ignore

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: (C, T, H, W) clip (or any (..., H, W) array with channels first).
            randomize: draw a new offset; ``False`` reuses the last one (e.g. for an aligned second key).
        """
        if not isinstance(img, (np.ndarray, torch.Tensor)) or img.ndim < 3:
            shape = tuple(img.shape) if hasattr(img, "shape") else type(img).__name__
            raise ValueError(f"RandFrameJitter{_where(img)}: expected a (C, ..., H, W) array, got {shape}.")
        # checked before the draw so that a bad ``value`` fails on every call, not only when the shift is non-zero
        fill = _fill_values(self.value, img.shape[0], "RandFrameJitter").reshape((-1,) + (1,) * (img.ndim - 1))
        if randomize:
            self.randomize()
        if not self._do_transform or self.shift == (0, 0):
            return img
        dy, dx = self.shift
        h, w = img.shape[-2:]
        if isinstance(img, torch.Tensor):
            out = torch.empty_like(img)
            out.copy_(torch.as_tensor(fill, dtype=img.dtype, device=img.device).expand(img.shape))
        else:
            out = np.empty(img.shape, dtype=img.dtype)
            out[...] = fill.astype(img.dtype)
        ys, ye, xs, xe = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        if ys < ye and xs < xe:
            out[..., ys:ye, xs:xe] = img[..., ys + dy : ye + dy, xs + dx : xe + dx]
        return out


def _write_view(
    img: NdarrayOrTensor, out: NdarrayOrTensor, start: int, period: int, shift: tuple[int, int], fill: NdarrayOrTensor
) -> None:
    """
    ``out[c, i, y, x] = img[c, start + period * i, y + dy, x + dx]`` where that frame and pixel exist, ``fill[c]``
    elsewhere: a clip (:py:class:`ClipSample` with end padding) and its frame jitter (:py:class:`RandFrameJitter`)
    written in one pass. ``img`` (C, T, H, W), ``out`` (C, L, H, W) of the same type, ``fill`` (C, 1, 1, 1).
    """
    num_frames, h, w = img.shape[1], img.shape[2], img.shape[3]
    length = out.shape[1]
    n = 0 if start >= num_frames else min(length, (num_frames - 1 - start) // period + 1)  # frames that exist
    dy, dx = shift
    ys, ye, xs, xe = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
    if n < length:
        out[:, n:] = fill
    if n == 0:
        return
    if ys >= ye or xs >= xe:  # shifted out of view entirely (pad >= H or W)
        out[:, :n] = fill
        return
    # only the border strips are filled: the interior is written once, straight from the source frames
    if ys > 0:
        out[:, :n, :ys] = fill
    if ye < h:
        out[:, :n, ye:] = fill
    if xs > 0:
        out[:, :n, ys:ye, :xs] = fill
    if xe < w:
        out[:, :n, ys:ye, xe:] = fill
    stop = start + period * (n - 1) + 1
    out[:, :n, ys:ye, xs:xe] = img[:, start:stop:period, ys + dy : ye + dy, xs + dx : xe + dx]


class RandClipViews(RandomizableTransform, ClipSample):
    """
    ``num_views`` independent training views of one video, each a clip of ``length`` frames every ``period`` frames
    from its own uniformly random start with its own frame jitter: EchoNet-Dynamic's training clip, drawn once per
    view for AdaCon's two views per video (§III-C: a sample and its augmented copy; the authors' code draws two
    clips per video).

    Gives exactly ``RandMultiView(Compose([RandClipSample(length, period, pad_short, pad_value),
    RandFrameJitter(pad, pad_value, prob)]), num_views)`` (same random draws in the same order: start, jitter
    decision, jitter offset, view after view), but writes every output byte once, straight from the (memory-mapped)
    video into the output, instead of gathering the clip, filling and cropping a jittered copy and stacking the
    views. Reading a :py:class:`~monai_contrastive.data.video.VideoCache` entry it touches only the frames and rows
    it keeps. This is the step that makes a cached training clip cheap (``benchmarks/results/echo_data_pipeline.md``).

    Input (C, T, H, W), numpy array or tensor, any dtype (uint8 in the fast pipeline); output (V, C, length, H, W),
    same type and dtype. The draws of the last call are ``self.starts`` and ``self.shifts`` (``(dy, dx)`` per view).

    Args:
        num_views: V.
        length: frames per clip (EchoNet/AdaCon: 32).
        period: sampling period in frames (EchoNet/AdaCon: 2).
        pad: frame jitter in pixels on each side (EchoNet: 12).
        pad_value: value of padded frames and jitter borders, one number or one per channel (EchoNet pads normalised
            videos with 0, the mean colour: for a uint8 video pass the rounded per-channel mean).
        prob: probability of jittering each view.
        pad_short: pad videos shorter than ``length * period`` frames at the end (EchoNet's behaviour); ``False``
            raises for a video shorter than the clip span.

    Raises:
        ValueError: the video is too short (``pad_short=False``) or not (C, T, H, W), naming the file when the input
            is a MetaTensor from :py:class:`LoadVideo`.
    """

    def __init__(
        self,
        num_views: int = 2,
        length: int = 32,
        period: int = 2,
        pad: int = 12,
        pad_value: float | Sequence[float] = 0,
        prob: float = 1.0,
        pad_short: bool = True,
    ) -> None:
        RandomizableTransform.__init__(self, prob=prob)
        ClipSample.__init__(self, length=length, period=period, start=0, pad_short=pad_short, pad_value=pad_value)
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}.")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}.")
        self.num_views, self.pad = int(num_views), int(pad)
        self.starts: list[int] = []
        self.shifts: list[tuple[int, int]] = []

    def randomize(self, data: int) -> None:  # type: ignore[override]
        """For each view, draw a start among ``data`` valid starts, whether to jitter, and the jitter offset."""
        self._do_transform = True
        starts, shifts = [], []
        for _ in range(self.num_views):
            starts.append(int(self.R.randint(data)))
            jitter = self.R.rand() < self.prob
            dy, dx = (int(v) - self.pad for v in self.R.randint(0, 2 * self.pad + 1, size=2))
            shifts.append((dy, dx) if jitter else (0, 0))
        self.starts, self.shifts = starts, shifts

    def _fill(self, img: NdarrayOrTensor, out: NdarrayOrTensor) -> NdarrayOrTensor:
        fill = _fill_values(self.pad_value, img.shape[0], type(self).__name__)
        if isinstance(out, torch.Tensor):
            return torch.as_tensor(fill, device=out.device).to(out.dtype)
        return fill.astype(out.dtype)

    def write(self, img: NdarrayOrTensor, outs: Sequence[NdarrayOrTensor]) -> None:
        """Write view ``v`` of the last draw into ``outs[v]`` (C, length, H, W) (e.g. separate arrays per view)."""
        if len(outs) != len(self.starts):
            raise ValueError(f"{type(self).__name__}: {len(outs)} outputs for {len(self.starts)} drawn views.")
        src = img.as_tensor() if isinstance(img, MetaTensor) else img
        if (
            isinstance(src, np.ndarray)
            and src.flags.writeable
            and all(isinstance(o, np.ndarray) for o in outs)
            and torch.get_num_threads() > 1
        ):
            # torch copies strided uint8 blocks on its intra-op threads: ~1.4x numpy's speed with 2 threads (in
            # DataLoader worker processes torch uses one thread, and numpy is as fast). from_numpy shares memory.
            src, outs = torch.from_numpy(src), [torch.from_numpy(o) for o in outs]
        fill = self._fill(img, outs[0]) if outs else None
        for out, start, shift in zip(outs, self.starts, self.shifts):
            _write_view(src, out, start, self.period, shift, fill)

    def empty(self, img: NdarrayOrTensor, stacked: bool = True) -> NdarrayOrTensor:
        """Uninitialised output for ``img`` of its type, dtype and device: (V, C, length, H, W), or one view
        (C, length, H, W) with ``stacked=False``."""
        shape = (img.shape[0], self.length, *img.shape[2:])
        shape = (self.num_views, *shape) if stacked else shape
        if isinstance(img, torch.Tensor):
            return torch.empty(shape, dtype=img.dtype, device=img.device)
        return np.empty(shape, dtype=img.dtype)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:  # type: ignore[override]
        """
        Args:
            img: video (C, T, H, W).
            randomize: draw new clips; ``False`` reuses the last draw (e.g. for an aligned second key).
        """
        num_starts = self._num_starts(img)
        if randomize:
            self.randomize(num_starts)
        elif not self.starts or max(self.starts) >= num_starts:
            raise ValueError(f"{type(self).__name__}{_where(img)}: the last draw is not valid for this video.")
        out = self.empty(img)
        self.write(img, list(out))
        if isinstance(img, MetaTensor):
            meta = dict(img.meta)
            meta["clip_starts"] = list(self.starts)
            return MetaTensor(out, meta=meta)
        return out
