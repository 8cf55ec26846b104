"""EchoNet-Dynamic FileList.csv reader, JSON video datalists and ``load_echo_split``."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest

from monai_contrastive.data.echonet import load_echonet_filelist, load_video_datalist

from .echo_rows import read_rows

cv2 = pytest.importorskip("cv2")


def _copy_demo(demo: str, tmp_path, edit=None) -> str:
    """A copy of the demo whose FileList rows are passed through ``edit(rows) -> (fieldnames, rows)``."""
    root = str(tmp_path / "copy")
    shutil.copytree(demo, root)
    if edit is not None:
        fields, rows = edit(read_rows(root))
        with open(os.path.join(root, "FileList.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return root


# ---------------------------------------------------------------------------------------------- FileList reader


def test_filelist_reader(demo):
    rows = read_rows(demo)
    train = load_echonet_filelist(demo)
    assert len(train) == sum(r["Split"] == "TRAIN" for r in rows)
    everything = load_echonet_filelist(demo, "all")
    assert [it["filename"] for it in everything] == [r["FileName"] for r in rows]
    two = load_echonet_filelist(demo, ["val", "TEST"])
    assert {it["split"] for it in two} == {"VAL", "TEST"}
    it = everything[0]
    keys = {"image", "label", "filename", "split", "esv", "edv", "fps", "num_frames", "frame_height", "frame_width"}
    assert set(it) == keys
    assert it["frame_height"] == int(rows[0]["FrameHeight"]) and it["frame_width"] == int(rows[0]["FrameWidth"])
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
    victim = read_rows(root)[1]["FileName"]
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
    with pytest.raises(ValueError, match=r"\['training'\]\[2\].*label must be a finite number, got nan"):
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
