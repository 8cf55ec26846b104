"""The synthetic echo demo: EchoNet-Dynamic layout, determinism, EF distribution and the drawn cardiac cycle."""

from __future__ import annotations

import os

import numpy as np
import pytest

from monai_contrastive.data.echonet import ECHONET_COLUMNS, load_echonet_filelist
from monai_contrastive.data.synthetic_echo import area_length_volume, draw_echo_params, generate_echo_demo
from monai_contrastive.data.video import read_video

from .echo_rows import read_rows

cv2 = pytest.importorskip("cv2")


# ---------------------------------------------------------------------------------------------- demo generator


def test_demo_layout_and_csv(demo):
    rows = read_rows(demo)
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
    assert read_rows(other) == read_rows(demo)
    name = read_rows(demo)[0]["FileName"] + ".avi"
    np.testing.assert_array_equal(
        read_video(os.path.join(other, "Videos", name)), read_video(os.path.join(demo, "Videos", name))
    )


def test_demo_refuses_foreign_filelist(tmp_path):
    (tmp_path / "FileList.csv").write_text("FileName,EF\nreal,50\n")
    with pytest.raises(FileExistsError, match="did not write"):
        generate_echo_demo(str(tmp_path), num_videos=2)


def test_demo_regenerates_on_new_arguments(tmp_path):
    root = generate_echo_demo(str(tmp_path / "d"), num_videos=3, seed=1, frames=(64, 66))
    old = {r["FileName"] for r in read_rows(root)}
    generate_echo_demo(root, num_videos=2, seed=2, frames=(64, 66))
    new = {r["FileName"] for r in read_rows(root)}
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
    for i, r in enumerate(read_rows(demo)):
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
