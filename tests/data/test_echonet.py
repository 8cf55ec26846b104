"""EchoNet-Dynamic readers, video cache, normalisation fitting and the synthetic echo demo."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from monai_contrastive.data import echonet
from monai_contrastive.data.echonet import (
    ECHONET_COLUMNS,
    VideoCache,
    fit_video_normalization,
    load_echonet_filelist,
    load_normalization,
    load_video_datalist,
    read_video,
    save_normalization,
)
from monai_contrastive.data.synthetic_echo import area_length_volume, draw_echo_params, generate_echo_demo

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    return generate_echo_demo(str(tmp_path_factory.mktemp("echo") / "EchoNet"), num_videos=6, seed=0, frames=(64, 80))


def _rows(root: str) -> list[dict]:
    with open(os.path.join(root, "FileList.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _copy_demo(demo: str, tmp_path, edit=None) -> str:
    """A copy of the demo whose FileList rows are passed through ``edit(rows) -> (fieldnames, rows)``."""
    root = str(tmp_path / "copy")
    shutil.copytree(demo, root)
    if edit is not None:
        fields, rows = edit(_rows(root))
        with open(os.path.join(root, "FileList.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return root


# ---------------------------------------------------------------------------------------------- demo generator


def test_demo_layout_and_csv(demo):
    rows = _rows(demo)
    assert len(rows) == 6 and tuple(rows[0]) == ECHONET_COLUMNS
    assert {r["Split"] for r in rows} == {"TRAIN", "VAL", "TEST"}
    for r in rows:
        assert not r["FileName"].endswith(".avi")
        assert os.path.isfile(os.path.join(demo, "Videos", r["FileName"] + ".avi"))
        assert r["FrameHeight"] == r["FrameWidth"] == "112"
        assert 64 <= int(r["NumberOfFrames"]) <= 80
        edv, esv, ef = float(r["EDV"]), float(r["ESV"]), float(r["EF"])
        assert abs(ef - 100.0 * (edv - esv) / edv) < 0.5


def test_demo_is_cached_and_deterministic(demo, tmp_path):
    stamp = os.path.getmtime(os.path.join(demo, "FileList.csv"))
    assert generate_echo_demo(demo, num_videos=6, seed=0, frames=(64, 80)) == demo
    assert os.path.getmtime(os.path.join(demo, "FileList.csv")) == stamp  # nothing rewritten
    other = generate_echo_demo(str(tmp_path / "again"), num_videos=6, seed=0, frames=(64, 80))
    assert _rows(other) == _rows(demo)
    name = _rows(demo)[0]["FileName"] + ".avi"
    np.testing.assert_array_equal(
        read_video(os.path.join(other, "Videos", name)), read_video(os.path.join(demo, "Videos", name))
    )


def test_demo_refuses_foreign_filelist(tmp_path):
    (tmp_path / "FileList.csv").write_text("FileName,EF\nreal,50\n")
    with pytest.raises(FileExistsError, match="did not write"):
        generate_echo_demo(str(tmp_path), num_videos=2)


def test_demo_regenerates_on_new_arguments(tmp_path):
    root = generate_echo_demo(str(tmp_path / "d"), num_videos=3, seed=1, frames=(64, 66))
    old = {r["FileName"] for r in _rows(root)}
    generate_echo_demo(root, num_videos=2, seed=2, frames=(64, 66))
    new = {r["FileName"] for r in _rows(root)}
    assert len(new) == 2 and sorted(os.listdir(os.path.join(root, "Videos"))) == sorted(n + ".avi" for n in new)
    assert not old & new


def test_demo_ef_distribution_of_300_videos():
    # video i depends only on (seed, i), so these are exactly the 300 rows generate_echo_demo(num_videos=300) writes
    params = [draw_echo_params(i, seed=0) for i in range(300)]
    ef = np.array([p["ef"] for p in params])
    assert 50.0 <= ef.mean() <= 61.0
    assert 8.0 <= ef.std() <= 16.0
    assert (ef < 40.0).sum() >= 10
    for p in params:
        # area-length method on the ellipse the video draws: A = pi a b, L = 2 a (pixels -> mm)
        mm = 1.4
        edv = area_length_volume(np.pi * p["a_ed"] * p["b_ed"] * mm**2, 2 * p["a_ed"] * mm)
        esv = area_length_volume(np.pi * p["a_es"] * p["b_es"] * mm**2, 2 * p["a_es"] * mm)
        assert abs(p["ef"] - 100 * (edv - esv) / edv) < 1e-6
    assert all(p["num_frames"] >= 64 for p in params)


def test_demo_rows_match_params(demo):
    for i, r in enumerate(_rows(demo)):
        p = draw_echo_params(i, seed=0, frames=(64, 80))
        assert r["FileName"] == p["filename"] and int(r["NumberOfFrames"]) == p["num_frames"]
        assert abs(float(r["EF"]) - p["ef"]) < 1e-4


def test_demo_video_shows_the_cycle(demo):
    """The dark cavity area inside the fan shrinks from diastole to systole in proportion to the EF."""
    amplitude, efs = [], []
    for it in load_echonet_filelist(demo, "ALL"):
        video = read_video(it["image"])[0].astype(np.float32)  # (T, H, W)
        video = np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in video])
        fan = video.mean(0) > 8  # inside the sector
        dark = ((video < 25) & fan).sum(axis=(1, 2)).astype(float)
        amplitude.append((dark.max() - dark.min()) / dark.max())
        efs.append(it["label"])
    assert np.corrcoef(amplitude, efs)[0, 1] > 0.7


# ---------------------------------------------------------------------------------------------- FileList reader


def test_filelist_reader(demo):
    rows = _rows(demo)
    train = load_echonet_filelist(demo)
    assert len(train) == sum(r["Split"] == "TRAIN" for r in rows)
    everything = load_echonet_filelist(demo, "all")
    assert [it["filename"] for it in everything] == [r["FileName"] for r in rows]
    two = load_echonet_filelist(demo, ["val", "TEST"])
    assert {it["split"] for it in two} == {"VAL", "TEST"}
    it = everything[0]
    assert set(it) == {"image", "label", "filename", "split", "esv", "edv", "fps", "num_frames"}
    assert os.path.isabs(it["image"]) and it["image"].endswith(rows[0]["FileName"] + ".avi")
    assert it["label"] == pytest.approx(float(rows[0]["EF"]))
    assert isinstance(it["num_frames"], int)


def test_filelist_accepts_filename_with_extension(demo, tmp_path):
    def add_ext(rows):
        for r in rows:
            r["FileName"] += ".avi"
        return list(rows[0]), rows

    root = _copy_demo(demo, tmp_path, add_ext)
    items = load_echonet_filelist(root, "ALL")
    assert all(os.path.isfile(it["image"]) and it["image"].endswith(".avi") for it in items)
    assert not any(it["image"].endswith(".avi.avi") for it in items)


def test_filelist_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="FileList.csv"):
        load_echonet_filelist(str(tmp_path))


def test_filelist_missing_column(demo, tmp_path):
    root = _copy_demo(demo, tmp_path, lambda rows: ([c for c in rows[0] if c != "EF"], rows))
    with pytest.raises(ValueError, match="missing column.*EF"):
        load_echonet_filelist(root, "ALL")


@pytest.mark.parametrize("bad", ["", "abc", "nan"])
def test_filelist_bad_ef_names_row(demo, tmp_path, bad):
    name = {}

    def corrupt(rows):
        rows[2]["EF"] = bad
        name["value"] = rows[2]["FileName"]
        return list(rows[0]), rows

    root = _copy_demo(demo, tmp_path, corrupt)
    with pytest.raises(ValueError, match=rf"line 4 \(FileName='{name['value']}'\).*EF"):
        load_echonet_filelist(root, "ALL")


def test_filelist_missing_video_names_file(demo, tmp_path):
    root = _copy_demo(demo, tmp_path)
    victim = _rows(root)[1]["FileName"]
    os.remove(os.path.join(root, "Videos", victim + ".avi"))
    with pytest.raises(FileNotFoundError, match=victim):
        load_echonet_filelist(root, "ALL")
    assert len(load_echonet_filelist(root, "ALL", check_files=False)) == 6


def test_filelist_empty_split(demo):
    with pytest.raises(ValueError, match="no rows with Split in \\['EXTERNAL'\\]"):
        load_echonet_filelist(demo, "EXTERNAL")


# ---------------------------------------------------------------------------------------------- JSON datalist


def test_video_datalist(demo, tmp_path):
    videos = sorted(os.listdir(os.path.join(demo, "Videos")))
    shutil.copytree(os.path.join(demo, "Videos"), tmp_path / "videos")
    content = {
        "training": [{"image": f"videos/{v}", "label": 50 + i, "quality": i % 2} for i, v in enumerate(videos[:4])],
        "validation": [{"image": f"videos/{videos[4]}", "label": "61.5"}],
        "testing": [],
    }
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    train = load_video_datalist(str(path))
    assert len(train) == 4 and train[1]["label"] == 51.0 and train[1]["quality"] == 1
    assert train[0]["image"] == str(tmp_path / "videos" / videos[0])
    assert load_video_datalist(str(path), "validation")[0]["label"] == 61.5
    with pytest.raises(ValueError, match="empty"):
        load_video_datalist(str(path), "testing")
    with pytest.raises(KeyError, match="'external'"):
        load_video_datalist(str(path), "external")

    content["training"][2]["label"] = float("nan")
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"\['training'\]\[2\].*label must be finite"):
        load_video_datalist(str(path))
    del content["training"][2]["label"]
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"\[2\].*label is missing"):
        load_video_datalist(str(path))
    content["training"][2]["label"] = 40
    content["training"][3]["image"] = "videos/nope.avi"
    path.write_text(json.dumps(content))
    with pytest.raises(FileNotFoundError, match="nope.avi"):
        load_video_datalist(str(path))


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
    real = echonet.read_video
    monkeypatch.setattr(echonet, "read_video", lambda p: calls.append(p) or real(p))
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
    monkeypatch.setattr(echonet, "read_video", lambda p: pytest.fail("decoded a cached video"))
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


def test_load_echo_split_from_folder_csv_and_json(demo, tmp_path):
    from monai_contrastive.data import load_echo_split

    by_root = load_echo_split(demo, "train")
    assert by_root == load_echonet_filelist(demo, "TRAIN")
    assert load_echo_split(os.path.join(demo, "FileList.csv"), "TEST") == load_echonet_filelist(demo, "TEST")
    videos = sorted(os.listdir(os.path.join(demo, "Videos")))
    content = {
        "training": [{"image": os.path.join(demo, "Videos", v), "label": 50.0} for v in videos[:3]],
        "validation": [{"image": os.path.join(demo, "Videos", videos[3]), "label": 40.0}],
        "testing": [{"image": os.path.join(demo, "Videos", videos[4]), "quality": "good"}],
    }
    path = tmp_path / "echo.json"
    path.write_text(json.dumps(content))
    assert len(load_echo_split(str(path), "TRAIN")) == 3
    assert load_echo_split(str(path), "VAL")[0]["label"] == 40.0
    with pytest.raises(ValueError, match=r"\['testing'\]\[0\].*label is missing"):
        load_echo_split(str(path), "TEST")  # "testing" is found when there is no "test"
    unlabelled = load_echo_split(str(path), "TEST", label_required=False)
    assert unlabelled[0]["quality"] == "good" and "label" not in unlabelled[0]
    with pytest.raises(ValueError, match="split must be one of"):
        load_echo_split(str(path), "ALL")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_echo_split(str(tmp_path / "nowhere"), "TRAIN")


def test_video_normalization_is_fitted_once(demo, tmp_path, monkeypatch):
    from monai_contrastive.data import video_normalization

    items = load_echonet_filelist(demo, "TRAIN")
    path = str(tmp_path / "models" / "normalization.json")
    mean, std = video_normalization(path, items, num_videos=None)
    assert (mean, std) == fit_video_normalization(items, num_videos=None)
    assert json.load(open(path))["fitted_on"] == len(items)
    calls = []
    monkeypatch.setattr(echonet, "fit_video_normalization", lambda *a, **k: calls.append(1))
    assert video_normalization(path, items[:1]) == (mean, std)  # read back, not refitted on other items
    assert not calls
