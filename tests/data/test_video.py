"""Video decoding, the decode-once video cache and the fitting / storing of normalisation statistics."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from monai_contrastive.data import video as video_data
from monai_contrastive.data import video_stats
from monai_contrastive.data.echonet import load_echonet_filelist
from monai_contrastive.data.loaders import CheckedThreadDataLoader
from monai_contrastive.data.synthetic_echo import generate_echo_demo
from monai_contrastive.data.video import VideoCache, check_video_files, read_video
from monai_contrastive.data.video_stats import fit_video_normalization, load_normalization, save_normalization

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    return generate_echo_demo(str(tmp_path_factory.mktemp("echo") / "EchoNet"), num_videos=6, seed=0, frames=(64, 80))


# ---------------------------------------------------------------------------------------------- video reading


def test_read_video_round_trip(demo):
    for it in load_echonet_filelist(demo, "ALL"):
        video = read_video(it["image"])
        assert video.dtype == np.uint8 and video.shape == (3, it["num_frames"], 112, 112)
        assert video.flags["C_CONTIGUOUS"]


def test_read_video_is_rgb(tmp_path):
    path = str(tmp_path / "red.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (16, 8), True)
    assert writer.isOpened()
    frame = np.zeros((8, 16, 3), np.uint8)
    frame[..., 2] = 200  # red in OpenCV's BGR order
    for _ in range(3):
        writer.write(frame)
    writer.release()
    video = read_video(path)
    assert video.shape == (3, 3, 8, 16)
    assert (video[0] == 200).all() and (video[1:] == 0).all()


def test_read_video_corrupt_and_missing(tmp_path):
    bad = tmp_path / "corrupt.avi"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises((ValueError, RuntimeError), match="corrupt.avi"):
        read_video(str(bad))
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises((ValueError, RuntimeError), match="empty.avi"):
        read_video(str(empty))
    with pytest.raises(FileNotFoundError, match="missing.avi"):
        read_video(str(tmp_path / "missing.avi"))


# ---------------------------------------------------------------------------------------------- cache


def test_cache_decodes_once(demo, tmp_path, monkeypatch):
    calls = []
    real = video_data.read_video
    monkeypatch.setattr(video_data, "read_video", lambda p: calls.append(p) or real(p))
    path = load_echonet_filelist(demo, "ALL")[0]["image"]
    cache = VideoCache(str(tmp_path / "cache"))
    assert not cache.is_cached(path)
    first = cache.get(path)
    second = cache.get(path)
    assert len(calls) == 1 and cache.is_cached(path)
    assert isinstance(second, np.memmap) and second.dtype == np.uint8
    np.testing.assert_array_equal(first, real(path))
    np.testing.assert_array_equal(second, first)
    second[0, 0, 0, 0] = 255 - second[0, 0, 0, 0]  # copy-on-write: the cache file is untouched
    np.testing.assert_array_equal(VideoCache(str(tmp_path / "cache")).get(path), real(path))
    assert len(calls) == 1
    assert [f for f in os.listdir(tmp_path / "cache") if not f.endswith(".npy")] == []  # no temp files left


def test_cache_invalidated_when_video_changes(demo, tmp_path):
    src = load_echonet_filelist(demo, "ALL")
    path = str(tmp_path / "v.avi")
    shutil.copy(src[0]["image"], path)
    cache = VideoCache(str(tmp_path / "cache"))
    assert cache.get(path).shape[1] == src[0]["num_frames"]
    shutil.copy(src[1]["image"], path)
    os.utime(path, ns=(0, 10**9))  # another mtime even on coarse-grained file systems
    assert cache.get(path).shape[1] == src[1]["num_frames"]


def test_cache_recovers_from_damaged_entry(demo, tmp_path):
    path = load_echonet_filelist(demo, "ALL")[0]["image"]
    cache = VideoCache(str(tmp_path / "cache"))
    cache.get(path)
    with open(cache.cache_path(path), "r+b") as f:
        f.truncate(100)
    np.testing.assert_array_equal(cache.get(path), read_video(path))


def test_cache_keeps_maps_open_and_bounded(demo, tmp_path, monkeypatch):
    paths = [it["image"] for it in load_echonet_filelist(demo, "ALL")[:3]]
    cache = VideoCache(str(tmp_path / "cache"), max_open=2)
    cache.prepare(paths, progress=False)
    loads = []
    real = VideoCache._load
    monkeypatch.setattr(VideoCache, "_load", staticmethod(lambda p: loads.append(p) or real(p)))
    first = cache.get(paths[0])
    assert cache.get(paths[0]) is first and len(loads) == 1  # served from the open map
    cache.get(paths[1])
    cache.get(paths[2])  # evicts paths[0], the least recently used
    assert len(cache._open) == 2 and len(loads) == 3
    np.testing.assert_array_equal(cache.get(paths[0]), first)
    assert len(loads) == 4
    pickled = pickle.loads(pickle.dumps(cache))  # spawned workers and deep copies start with no open maps
    assert pickled.max_open == 2 and len(pickled._open) == 0
    np.testing.assert_array_equal(pickled.get(paths[0]), first)
    assert VideoCache(str(tmp_path / "cache"), max_open=0).get(paths[0]) is not first
    with pytest.raises(ValueError, match="max_open"):
        VideoCache(str(tmp_path / "cache"), max_open=-1)
    assert 1 <= VideoCache(str(tmp_path / "cache")).max_open <= 16384
    fresh = VideoCache(str(tmp_path / "cache"))
    fresh.prepare(paths, progress=False)  # checking entries keeps no map open
    assert len(fresh._open) == 0


def test_cache_prepare(demo, tmp_path, monkeypatch):
    items = load_echonet_filelist(demo, "ALL")
    cache = VideoCache(str(tmp_path / "cache"))
    files = cache.prepare(items, num_workers=2, progress=False)
    assert len(files) == 6 and all(os.path.isfile(f) for f in files)
    monkeypatch.setattr(video_data, "read_video", lambda p: pytest.fail("decoded a cached video"))
    cache.prepare(items, progress=False)
    monkeypatch.undo()

    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(RuntimeError, match="(?s)1 of 2.*bad.avi"):
        cache.prepare([items[0]["image"], str(bad)], progress=False)


# ---------------------------------------------------------------------------------------------- normalisation


def test_fit_normalization_matches_numpy(demo, tmp_path):
    items = load_echonet_filelist(demo, "ALL")
    mean, std = fit_video_normalization(items, num_videos=None)
    pixels = np.concatenate([read_video(it["image"]).reshape(3, -1) for it in items], axis=1).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(std, pixels.std(axis=1), rtol=1e-10)
    # through the cache: same numbers
    cached = fit_video_normalization(items, num_videos=100, cache=VideoCache(str(tmp_path / "c")))
    np.testing.assert_allclose(cached, (mean, std), rtol=1e-12)


def test_fit_normalization_subset_is_seeded(demo):
    items = load_echonet_filelist(demo, "ALL")
    a = fit_video_normalization(items, num_videos=3, seed=5)
    assert a == fit_video_normalization(items, num_videos=3, seed=5)
    subsets = [fit_video_normalization(items, num_videos=3, seed=s) for s in range(4)]
    assert len({tuple(m) for m, _ in subsets}) > 1
    rng = np.random.default_rng(5)
    chosen = [items[i]["image"] for i in sorted(rng.choice(6, size=3, replace=False))]
    pixels = np.concatenate([read_video(p).reshape(3, -1) for p in chosen], axis=1).astype(np.float64)
    np.testing.assert_allclose(a[0], pixels.mean(axis=1), rtol=1e-10)
    with pytest.raises(ValueError, match="no videos"):
        fit_video_normalization([])


def test_save_load_normalization(tmp_path):
    path = save_normalization(str(tmp_path / "sub" / "norm.json"), [30.0, 31.0, 32.0], [40.0, 41.0, 42.0], seed=0)
    assert load_normalization(path) == ([30.0, 31.0, 32.0], [40.0, 41.0, 42.0])
    assert json.loads(open(path).read())["seed"] == 0
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_normalization(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [1.0], "std": [0.0]}))
    with pytest.raises(ValueError, match="std"):
        load_normalization(str(tmp_path / "bad.json"))


# ---------------------------------------------------------------------------------------------- bundle helpers


def test_video_normalization_is_fitted_once(demo, tmp_path, monkeypatch):
    from monai_contrastive.data import video_normalization

    items = load_echonet_filelist(demo, "TRAIN")
    path = str(tmp_path / "models" / "normalization.json")
    mean, std = video_normalization(path, items, num_videos=None)
    assert (mean, std) == fit_video_normalization(items, num_videos=None)
    assert json.load(open(path))["fitted_on"] == len(items)
    calls = []
    monkeypatch.setattr(video_stats, "fit_video_normalization", lambda *a, **k: calls.append(1))
    assert video_normalization(path, items[:1]) == (mean, std)  # read back, not refitted on other items
    assert not calls


# ---------------------------------------------------------------------------------------------- bad videos


def _write_avi(path, frames: int, size: int = 112) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (size, size), True)
    rng = np.random.default_rng(frames + size)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    writer.release()
    return str(path)


def test_truncated_video_is_named(tmp_path):
    """A truncated AVI decodes its first half with only an FFmpeg warning: compare with the declared count."""
    full = _write_avi(tmp_path / "full.avi", 40)
    data = open(full, "rb").read()
    cut = tmp_path / "0XCUT.avi"
    cut.write_bytes(data[: len(data) // 2])
    assert read_video(full).shape[1] == 40
    with pytest.raises(ValueError, match=r"0XCUT\.avi: only \d+ of the 40 frames"):
        read_video(str(cut))
    with pytest.raises(RuntimeError, match=r"(?s)1 of 2 video.*0XCUT\.avi: ValueError.*of the 40 frames"):
        VideoCache(str(tmp_path / "cache")).prepare([full, str(cut)], progress=False)


def test_frame_count_and_size_checked_against_the_filelist(tmp_path):
    """FileList's NumberOfFrames / FrameHeight / FrameWidth, and a 128x128 video among 112x112 ones."""
    ok = [{"image": _write_avi(tmp_path / f"v{i}.avi", 20), "num_frames": 20, "frame_height": 112} for i in range(3)]
    big = {"image": _write_avi(tmp_path / "0XBIG.avi", 20, size=128)}
    short = {"image": _write_avi(tmp_path / "0XSHORT.avi", 12), "num_frames": 30}
    check_video_files(ok)
    with pytest.raises(ValueError, match=r"(?s)0XBIG\.avi: frames are 128x128 \(HxW\), 3 of 4 videos are 112x112"):
        check_video_files(ok + [big])
    with pytest.raises(ValueError, match=r"0XSHORT\.avi: 12 frames but NumberOfFrames says 30"):
        check_video_files(ok + [short])
    lying = dict(ok[0], frame_width=128)
    with pytest.raises(ValueError, match=r"v0\.avi: FrameWidth is 112 but the list says 128"):
        check_video_files([lying])
    with pytest.raises(RuntimeError, match=r"(?s)2 of 5.*0XSHORT\.avi: 12 frames.*0XBIG\.avi: frames are 128x128"):
        VideoCache(str(tmp_path / "cache")).prepare(ok + [big, short], progress=False)


class _Failing(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 4:
            raise ValueError("video /data/0XBAD.avi: cannot be decoded")
        return torch.zeros(2)


def test_checked_thread_loader_reraises_loader_errors():
    """MONAI's ThreadDataLoader drops an error raised in its thread: the epoch silently ends early."""
    from monai.data import ThreadDataLoader

    assert len(list(ThreadDataLoader(_Failing(), batch_size=2))) == 2  # the defect this class exists for
    loader = CheckedThreadDataLoader(_Failing(), batch_size=2)
    seen = []
    with pytest.raises(ValueError, match="0XBAD.avi"):
        for batch in loader:
            seen.append(batch)
    assert len(seen) == 2
    assert len(list(CheckedThreadDataLoader(_Failing(), batch_size=2, repeats=2, sampler=range(4)))) == 4
