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
"""Per-channel normalisation statistics of video intensities, fitted the way EchoNet-Dynamic / AdaCon do (reused
for any video dataset), saved once and read by every later run."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from monai_contrastive.data.video import VideoCache, read_video
from monai_contrastive.io import atomic_write_json

__all__ = ["fit_video_normalization", "save_normalization", "load_normalization", "video_normalization"]


def fit_video_normalization(
    items: Sequence[dict | str], num_videos: int | None = 128, seed: int = 0, cache: VideoCache | None = None
) -> tuple[list[float], list[float]]:
    """
    Per-channel mean and standard deviation of video intensities (0-255 scale), as EchoNet-Dynamic fits them.

    EchoNet (``echonet.utils.get_mean_and_std``) draws 128 training videos at random and normalises with the
    population statistics of their pixels. Here every frame of each drawn video counts; the draw is seeded
    (``numpy.random.default_rng(seed)``) so refitting gives the same numbers. Fit on training videos only and
    save the result with :py:func:`save_normalization`.

    Args:
        items: datalist dicts (video under ``"image"``) or paths, e.g. ``load_echonet_filelist(root, "TRAIN")``.
        num_videos: how many videos to draw without replacement; ``None`` or >= ``len(items)`` uses all.
        seed: seed of the draw.
        cache: read videos through this cache (filling it) instead of decoding them.

    Returns:
        ``(mean, std)``, lists of one float per channel (RGB).

    Raises:
        ValueError: ``items`` is empty, or a channel has zero variance (normalising would divide by zero).
    """
    paths = [it["image"] if isinstance(it, dict) else it for it in items]
    if not paths:
        raise ValueError("fit_video_normalization: no videos given.")
    if num_videos is not None and num_videos < len(paths):
        if num_videos < 1:
            raise ValueError(f"fit_video_normalization: num_videos must be >= 1, got {num_videos}.")
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=num_videos, replace=False))]
    # exact integer histograms per channel: no float accumulation error over ~10^8 pixels
    hist: np.ndarray | None = None
    for p in paths:
        video = cache.get(p, keep_open=False) if cache is not None else read_video(p)
        counts = np.stack([np.bincount(np.asarray(video[c]).ravel(), minlength=256) for c in range(video.shape[0])])
        if hist is not None and counts.shape != hist.shape:
            raise ValueError(f"fit_video_normalization: {p} has {video.shape[0]} channels, expected {hist.shape[0]}.")
        hist = counts if hist is None else hist + counts
    assert hist is not None
    values = np.arange(256, dtype=np.float64)
    n = hist.sum(axis=1).astype(np.float64)
    mean = (hist * values).sum(axis=1) / n
    var = (hist * (values[None] - mean[:, None]) ** 2).sum(axis=1) / n
    std = np.sqrt(var)
    if np.any(std <= 0):
        raise ValueError(f"fit_video_normalization: zero standard deviation in channel(s) {np.nonzero(std <= 0)[0]}.")
    return [float(m) for m in mean], [float(s) for s in std]


def save_normalization(path: str, mean: Sequence[float], std: Sequence[float], **metadata: Any) -> str:
    """
    Write ``{"mean": [...], "std": [...], ...metadata}`` as JSON (atomically) and return ``path``.

    ``metadata`` (e.g. ``num_videos=128, seed=0, source="FileList.csv TRAIN"``) is stored alongside for provenance.
    """
    mean, std = _check_stats(mean, std, str(path))
    path = os.path.abspath(os.path.expanduser(str(path)))
    return atomic_write_json({"mean": mean, "std": std, **metadata}, path, sync=False)


def load_normalization(path: str) -> tuple[list[float], list[float]]:
    """
    Read ``(mean, std)`` written by :py:func:`save_normalization`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file lacks ``mean``/``std``, their lengths differ, or a value is not finite / std <= 0.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"normalization file not found: {path}")
    with open(path) as f:
        content = json.load(f)
    if not isinstance(content, dict) or "mean" not in content or "std" not in content:
        raise ValueError(f"{path}: expected a JSON object with 'mean' and 'std' lists.")
    return _check_stats(content["mean"], content["std"], path)


def _check_stats(mean: Any, std: Any, where: str) -> tuple[list[float], list[float]]:
    try:
        m = [float(v) for v in np.atleast_1d(np.asarray(mean, dtype=np.float64))]
        s = [float(v) for v in np.atleast_1d(np.asarray(std, dtype=np.float64))]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: mean and std must be numbers or lists of numbers.") from None
    if len(m) != len(s):
        raise ValueError(f"{where}: mean has {len(m)} values but std has {len(s)}.")
    if not all(math.isfinite(v) for v in m + s) or any(v <= 0 for v in s):
        raise ValueError(f"{where}: mean must be finite and std finite and > 0, got mean={m}, std={s}.")
    return m, s


def video_normalization(
    path: str, items: Sequence[dict | str], num_videos: int | None = 128, seed: int = 0, cache_dir: str | None = None
) -> tuple[list[float], list[float]]:
    """
    The normalisation statistics stored at ``path``; fitted on ``items`` (training videos) and saved there first when
    the file does not exist yet, so every later run, evaluation and inference uses the same numbers.

    Args:
        path: JSON file (e.g. ``<bundle>/models/normalization.json``).
        items: training items, used only when ``path`` does not exist.
        num_videos: videos drawn for the fit (EchoNet: 128).
        seed: seed of the draw.
        cache_dir: read the videos through a :py:class:`VideoCache` in this folder.

    Returns:
        ``(mean, std)``, one float per channel, 0-255 scale.
    """
    if os.path.isfile(path):
        return load_normalization(path)
    cache = VideoCache(cache_dir) if cache_dir else None
    mean, std = fit_video_normalization(items, num_videos=num_videos, seed=seed, cache=cache)
    save_normalization(path, mean, std, num_videos=num_videos, seed=seed, fitted_on=len(items))
    return mean, std
