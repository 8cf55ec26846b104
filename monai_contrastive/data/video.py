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
Generic video decoding, a decode-once cache of decoded videos and the per-channel normalisation statistics of video
intensities (fitted the way EchoNet-Dynamic / AdaCon do, reused for any video dataset).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from monai.data import DataLoader as MonaiDataLoader
from monai.data import ThreadBuffer, ThreadDataLoader
from monai.utils import optional_import

from monai_contrastive.io import atomic_write, atomic_write_json

cv2, _ = optional_import("cv2")
tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = [
    "read_video",
    "video_header",
    "check_video_files",
    "CheckedThreadDataLoader",
    "VideoCache",
    "fit_video_normalization",
    "save_normalization",
    "load_normalization",
    "video_normalization",
]

# bump when the cached array layout changes so that stale cache entries are never reused
_CACHE_VERSION = "v1"


def read_video(path: str, check_frame_count: bool = True) -> np.ndarray:
    """
    Decode a whole video with OpenCV, the way the EchoNet-Dynamic code does (``echonet.utils.loadvideo``).

    Args:
        path: video file (any container/codec the installed OpenCV/FFmpeg reads; EchoNet uses AVI).
        check_frame_count: fail when fewer frames decode than the container declares (a truncated file decodes
            its first part with only an FFmpeg warning).

    Returns:
        uint8 array of shape (C=3, T, H, W), RGB channel order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be opened, holds no decodable frame, its frames change size, or (with
            ``check_frame_count``) fewer frames decode than its header declares.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    cap = cv2.VideoCapture(path)
    frames: list[np.ndarray] = []
    declared = 0
    try:
        if not cap.isOpened():
            raise ValueError(f"cannot open video {path}: corrupt file or unsupported codec.")
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 2:
                frame = np.repeat(frame[..., None], 3, axis=-1)
            if frames and frame.shape != frames[0].shape:
                raise ValueError(
                    f"video {path}: frame {len(frames)} has shape {frame.shape}, frame 0 has {frames[0].shape}."
                )
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"video {path} has no decodable frames (corrupt or empty file).")
    if check_frame_count and declared > 0 and len(frames) < declared:
        raise ValueError(
            f"video {path}: only {len(frames)} of the {declared} frames its container declares could be decoded "
            "(truncated or corrupt file)."
        )
    video = np.stack(frames)  # (T, H, W, 3) BGR
    # BGR -> RGB and channel first; one contiguous copy
    return np.ascontiguousarray(video[..., ::-1].transpose(3, 0, 1, 2))


def video_header(path: str) -> dict:
    """Frame count, height, width and frame rate a video's container declares, read without decoding.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be opened.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise ValueError(f"cannot open video {path}: corrupt file or unsupported codec.")
        return {
            "num_frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            "fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
        }
    finally:
        cap.release()


def _finite_int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(round(number)) if math.isfinite(number) else None


def _listed_problems(item: Mapping, num_frames: int, height: int, width: int) -> list[str]:
    """What disagrees between a decoded (or declared) video and what its datalist row (FileList.csv) says."""
    problems = []
    listed = _finite_int(item.get("num_frames"))
    if listed is not None and num_frames < listed:
        problems.append(f"{num_frames} frames but NumberOfFrames says {listed} (truncated file?)")
    for key, column, actual in (("frame_height", "FrameHeight", height), ("frame_width", "FrameWidth", width)):
        listed = _finite_int(item.get(key))
        if listed is not None and actual != listed:
            problems.append(f"{column} is {actual} but the list says {listed}")
    return problems


def _size_outliers(sizes: dict[str, tuple[int, int]], size: Sequence[int] | None) -> list[str]:
    if not sizes:
        return []
    if size is None:
        counts: dict[tuple[int, int], int] = {}
        for hw in sizes.values():
            counts[hw] = counts.get(hw, 0) + 1
        expected = max(counts, key=lambda hw: counts[hw])
        why = f"{counts[expected]} of {len(sizes)} videos"
    else:
        expected = (int(size[0]), int(size[1]))
        why = "expected"
    return [
        f"{p}: frames are {h}x{w} (HxW), {why} are {expected[0]}x{expected[1]}"
        for p, (h, w) in sizes.items()
        if (h, w) != expected
    ]


def _problems_message(problems: list[str], total: int, what: str) -> str:
    """The first problem on the first line (so a one-line summary still names a file), then all of them."""
    message = f"{len(problems)} of {total} video(s) {what}: {problems[0]}"
    if len(problems) > 1:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        message += "\n  " + "\n  ".join(problems[:10]) + more
    return message


def _raise_problems(problems: list[str], total: int, what: str) -> None:
    if problems:
        raise ValueError(_problems_message(problems, total, what))


def check_video_files(items: Iterable[Mapping | str], size: Sequence[int] | None = None, key: str = "image") -> None:
    """Check every video's header before training or inference (no decoding): all frames one size, and the frame
    size and count the datalist states (EchoNet-Dynamic's ``FrameHeight``, ``FrameWidth``, ``NumberOfFrames``, kept
    by :py:func:`~monai_contrastive.data.load_echonet_filelist` as ``frame_height``, ``frame_width``,
    ``num_frames``) where it states them. A 128x128 video among 112x112 ones would otherwise fail inside a loader
    thread, far from its file name.

    Args:
        items: datalist dicts (video under ``key``) or paths.
        size: the required (H, W); None: the size most videos have.
        key: the dict key of the video path.

    Raises:
        ValueError: listing every video that cannot be opened, has another size, or disagrees with its row.
    """
    items = [it if isinstance(it, Mapping) else {key: it} for it in items]
    problems, sizes = [], {}
    for item in items:
        path = str(item[key])
        try:
            header = video_header(path)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
            continue
        sizes[path] = (header["height"], header["width"])
        problems += [f"{path}: {p}" for p in _listed_problems(item, header["num_frames"], *sizes[path])]
    problems += _size_outliers(sizes, size)
    _raise_problems(problems, len(items), "cannot be used")


class _CheckedThreadBuffer(ThreadBuffer):
    """MONAI's ``ThreadBuffer`` drops an exception raised in its thread: the iteration just ends early (an epoch of
    a few batches, rc 0). This one hands it over and re-raises it in the consuming thread."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error: BaseException | None = None

    def enqueue_values(self):
        try:
            super().enqueue_values()
        except BaseException as e:  # re-raised by __iter__ in the consuming thread
            self.error = e

    def __iter__(self):
        self.error = None
        yield from super().__iter__()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class CheckedThreadDataLoader(ThreadDataLoader):
    """``monai.data.ThreadDataLoader`` whose background thread's errors reach the caller.

    MONAI's version loses any exception raised while loading a batch (a corrupt video, a clip that cannot be cut):
    the epoch silently ends early and the run exits 0. Here the error is re-raised where the batches are consumed
    (the trainer), with its original traceback. Same arguments as ``ThreadDataLoader``.
    """

    def __iter__(self):
        source = MonaiDataLoader.__iter__(self)
        buffer = _CheckedThreadBuffer(source, self.buffer_size, self.buffer_timeout)
        for batch in buffer:
            for _ in range(self.repeats):
                yield batch


def _file_identity(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _max_map_count() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 65530  # Linux's default


def _open_file_limit() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1024
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


class VideoCache:
    """
    Decode each video once and serve it afterwards as a memory-mapped uint8 ``.npy`` array.

    Decoding an AVI costs far more than sampling a 32-frame clip from it, so training reads the decoded array from
    ``<cache_dir>/<key>.npy`` instead, where ``key`` is a SHA-1 of the video's absolute path, size and modification
    time (an edited or replaced video gets a new entry). Entries are written to a temporary file in ``cache_dir``
    and moved into place with ``os.replace``, so DataLoader workers decoding the same video concurrently, and runs
    killed mid-write, never leave a truncated entry behind; an unreadable entry is decoded again.

    Each process keeps the memory maps of the ``max_open`` most recently used entries open (least recently used
    closed first): mapping an entry anew for every clip costs system calls and a page-table fault for every page
    the clip reads, which cut the cached pipeline's throughput by a third (``benchmarks/results/
    echo_data_pipeline.md``). An open map holds one file descriptor and one memory mapping, hence the bound; a
    cached entry that was truncated or replaced on disk is mapped again.

    Args:
        cache_dir: folder for the cache (created if needed). Stale entries are not deleted automatically.
        max_open: memory maps kept open per process (0: map the entry anew on every ``get``); ``None``: 16384 (all of
            EchoNet-Dynamic), or a quarter of the process's open-file limit or of ``vm.max_map_count`` when lower.

    Example::

        from monai_contrastive.data import VideoCache, load_echonet_filelist

        cache = VideoCache("/data/echonet_cache")
        cache.prepare(load_echonet_filelist("/data/EchoNet-Dynamic", "ALL"), num_workers=4)
        video = cache.get("/data/EchoNet-Dynamic/Videos/0X1A05DFFFCAFB253B.avi")  # (3, T, 112, 112) uint8
    """

    def __init__(self, cache_dir: str, max_open: int | None = None) -> None:
        if max_open is None:
            max_open = min(16384, _open_file_limit() // 4, _max_map_count() // 4)
        if max_open < 0:
            raise ValueError(f"VideoCache: max_open must be >= 0, got {max_open}.")
        self.cache_dir = os.path.abspath(os.path.expanduser(str(cache_dir)))
        os.makedirs(self.cache_dir, exist_ok=True)
        self.max_open = int(max_open)
        self._open: OrderedDict[str, tuple[np.ndarray, tuple]] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # open maps and the lock do not pickle (spawned DataLoader workers, deepcopy of a Compose): start empty
        state = self.__dict__.copy()
        state["_open"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def cache_path(self, path: str) -> str:
        """The ``.npy`` file that holds (or will hold) the decoded ``path``."""
        path = os.path.abspath(str(path))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"video file not found: {path}") from None
        key = hashlib.sha1(f"{_CACHE_VERSION}\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
        return os.path.join(self.cache_dir, f"{key}.npy")

    def is_cached(self, path: str) -> bool:
        """Whether a cache entry for the current version of ``path`` exists."""
        return os.path.isfile(self.cache_path(path))

    @staticmethod
    def _load(cached: str) -> np.ndarray | None:
        try:
            # copy-on-write mapping: writable (torch.from_numpy accepts it silently) but writes never reach the file
            arr = np.load(cached, mmap_mode="c")
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError):
            return None  # damaged entry (e.g. disk full while copying a cache folder): decode again
        if arr.ndim != 4 or arr.dtype != np.uint8 or arr.shape[0] != 3:
            return None
        return arr

    def get(self, path: str, keep_open: bool = True) -> np.ndarray:
        """
        The decoded video, shape (C=3, T, H, W), uint8, memory-mapped (copy-on-write) from the cache.

        Args:
            path: the video file.
            keep_open: keep the map among the ``max_open`` open ones (``False`` for a one-off read).

        Raises:
            FileNotFoundError, ValueError: as :py:func:`read_video`, naming ``path``.
        """
        cached = self.cache_path(path)
        with self._lock:
            entry = self._open.get(cached)
        if entry is not None:
            arr, ident = entry
            # the file must still be the one mapped, whole: reading a mapping past the end of a file truncated in
            # place kills the process with SIGBUS (replacing it with os.replace leaves the mapping valid)
            if _file_identity(cached) == ident:
                with self._lock:
                    if cached in self._open:
                        self._open.move_to_end(cached)
                return arr
            with self._lock:
                self._open.pop(cached, None)
        arr = self._load(cached)
        if arr is not None:
            return self._remember(cached, arr) if keep_open else arr
        video = read_video(path)
        atomic_write(cached, lambda f: np.save(f, video), binary=True, suffix=".npy", sync=False)
        arr = self._load(cached)
        if arr is None:
            return video
        return self._remember(cached, arr) if keep_open else arr

    def _remember(self, cached: str, arr: np.ndarray) -> np.ndarray:
        if self.max_open > 0:
            ident = _file_identity(cached)
            with self._lock:
                self._open[cached] = (arr, ident)
                self._open.move_to_end(cached)
                while len(self._open) > self.max_open:
                    self._open.popitem(last=False)
        return arr

    def prepare(
        self, items: Iterable[dict | str], num_workers: int = 0, progress: bool = True, key: str = "image"
    ) -> list[str]:
        """
        Decode every video of ``items`` that is not cached yet, and check every decoded video: all of one frame size,
        and as many frames and the frame size that the item states (``num_frames``, ``frame_height``,
        ``frame_width``, from EchoNet-Dynamic's FileList.csv) where it states them.

        Args:
            items: datalist dicts (the video path under ``key``) or paths.
            num_workers: decoding threads (OpenCV releases the GIL while decoding); 0 decodes in this thread.
            progress: show a tqdm progress bar.
            key: the dict key holding the video path.

        Returns:
            the cache file of every item, in order.

        Raises:
            RuntimeError: after trying every video, listing each one that could not be decoded, has another frame
                size than the others, or disagrees with its item.
        """
        entries = [it if isinstance(it, Mapping) else {key: it} for it in items]
        paths = [it[key] for it in entries]

        def _one(item: Mapping) -> tuple[str, str | None, str | None]:
            p = item[key]
            try:
                video = self.get(p, keep_open=False)
                problems = _listed_problems(item, *video.shape[1:])
                sizes[str(p)] = tuple(video.shape[2:])
                return p, self.cache_path(p), "; ".join(problems) or None
            except (OSError, ValueError, RuntimeError) as e:
                return p, None, f"{type(e).__name__}: {e}"

        sizes: dict[str, tuple] = {}
        if num_workers > 0:
            pool = ThreadPoolExecutor(max_workers=num_workers)
            results: Iterable = pool.map(_one, entries)
        else:
            pool = None
            results = map(_one, entries)
        if progress and has_tqdm:
            results = tqdm(results, total=len(paths), desc="decoding videos", unit="video")
        try:
            done = list(results)
        finally:
            if pool is not None:
                pool.shutdown()
        failed = [f"{p}: {err}" for p, _, err in done if err is not None] + _size_outliers(sizes, None)
        if failed:
            raise RuntimeError(_problems_message(failed, len(paths), "could not be decoded or do not fit"))
        return [c for _, c, _ in done]  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cache_dir={self.cache_dir!r})"


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
