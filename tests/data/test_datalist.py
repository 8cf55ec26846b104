from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from monai_contrastive.data import (
    DEMO_GENERATORS,
    check_loader_batches,
    generate_bmd_demo,
    items_fingerprint,
    load_regression_datalist,
    patient_grouped_folds,
    resolve_datalist,
    select_fold,
)
from monai_contrastive.data.datalist import parse_number


def _write(tmp_path, content: dict, images: tuple[str, ...] = ("a.png", "b.png", "c.png")) -> str:
    for name in images:
        (tmp_path / name).write_bytes(b"")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    return str(path)


def _good_items() -> list[dict]:
    return [
        {"image": "a.png", "label": 0.7, "patient": "P1"},
        {"image": "b.png", "label": 1, "patient": "P1"},
        {"image": "c.png", "label": "0.55", "patient": "P2"},
    ]


def _cohort(num_patients: int = 60) -> list[dict]:
    rng = np.random.default_rng(7)
    items = []
    for p in range(num_patients):
        for film in range(int(rng.choice([1, 2, 3], p=[0.75, 0.18, 0.07]))):
            items.append({"image": f"P{p}_{film}.png", "label": 0.7, "patient": f"P{p}"})
    return items


def test_load_regression_datalist(tmp_path):
    path = _write(tmp_path, {"name": "x", "training": _good_items()})
    items = load_regression_datalist(path)
    assert [it["label"] for it in items] == [0.7, 1.0, 0.55]
    assert all(type(it["label"]) is float for it in items)
    assert items[0]["image"] == os.path.join(str(tmp_path), "a.png")
    assert items[2]["patient"] == "P2"
    other = tmp_path / "other"
    other.mkdir()
    items = load_regression_datalist(path, base_dir=str(other), check_files=False)
    assert items[0]["image"] == os.path.join(str(other), "a.png")


def test_load_custom_label_key_and_unlabelled_list(tmp_path):
    content = {
        "training": [{"image": "a.png", "bmd": 0.6}],
        "testing": ["b.png", {"image": "c.png"}],
    }
    path = _write(tmp_path, content)
    assert load_regression_datalist(path, label_key="bmd")[0]["bmd"] == 0.6
    items = load_regression_datalist(path, key="testing", label_key=None)
    assert [os.path.basename(it["image"]) for it in items] == ["b.png", "c.png"]


def test_load_demo_datalist(tmp_path):
    path = generate_bmd_demo(str(tmp_path), num_patients=4, image_size=32, test_fraction=0.25)
    train = load_regression_datalist(path)
    test = load_regression_datalist(path, key="testing")
    assert all(os.path.isfile(it["image"]) for it in train + test)
    assert {it["patient"] for it in train}.isdisjoint({it["patient"] for it in test})


def test_missing_datalist_file(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        load_regression_datalist(missing)


def test_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_regression_datalist(str(path))


@pytest.mark.parametrize("content", [{"testing": _good_items()}, {"training": []}, {"training": {"image": "a.png"}}])
def test_missing_or_empty_key(tmp_path, content):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=r"datalist\.json.*'training'"):
        load_regression_datalist(path)


@pytest.mark.parametrize("missing_key", ["image", "label"])
def test_item_without_key(tmp_path, missing_key):
    items = _good_items()
    del items[1][missing_key]
    path = _write(tmp_path, {"training": items})
    with pytest.raises(KeyError, match=rf"item 1 has no '{missing_key}'"):
        load_regression_datalist(path)


def test_item_not_a_dict(tmp_path):
    path = _write(tmp_path, {"training": [_good_items()[0], "b.png"]})
    with pytest.raises(ValueError, match="item 1 must be a dict"):
        load_regression_datalist(path)


def test_missing_image_file(tmp_path):
    items = _good_items()
    items[2]["image"] = "gone.png"
    path = _write(tmp_path, {"training": items})
    with pytest.raises(FileNotFoundError, match=r"item 2: image file not found: .*gone\.png"):
        load_regression_datalist(path)
    items[2]["image"] = ["a.png", "gone.png"]  # multi-channel item
    path = _write(tmp_path, {"training": items})
    with pytest.raises(FileNotFoundError, match=r"item 2: .*gone\.png"):
        load_regression_datalist(path)
    assert len(load_regression_datalist(path, check_files=False)) == 3


@pytest.mark.parametrize(
    "label, shown",
    [
        ("abc", "'abc'"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (None, "None"),
        (True, "True"),
        ([1, 2], r"\[1, 2\]"),
    ],
)
def test_bad_label(tmp_path, label, shown):
    items = _good_items()
    items[1]["label"] = label
    path = _write(tmp_path, {"training": items})
    with pytest.raises(ValueError, match=rf"item 1 \(image '.*b\.png'\): label must be a finite number, got {shown}"):
        load_regression_datalist(path)


def test_folds_grouped_balanced_deterministic():
    items = _cohort()
    folds = patient_grouped_folds(items, num_folds=4, seed=0)
    assert len(folds) == len(items) and set(folds) == {0, 1, 2, 3}
    fold_of_patient: dict[str, set[int]] = {}
    for item, fold in zip(items, folds):
        fold_of_patient.setdefault(item["patient"], set()).add(fold)
    assert all(len(f) == 1 for f in fold_of_patient.values())
    sizes = np.bincount(folds, minlength=4)
    assert sizes.max() <= 1.2 * sizes.mean() and sizes.min() >= 0.8 * sizes.mean()
    assert patient_grouped_folds(items, num_folds=4, seed=0) == folds
    assert patient_grouped_folds(items, num_folds=4, seed=1) != folds
    assert set(patient_grouped_folds(items, num_folds=5)) == set(range(5))


def test_folds_items_without_group():
    items = [{"image": f"{i}.png", "label": 0.5} for i in range(8)]
    items[0]["patient"] = items[1]["patient"] = "P0"
    with pytest.warns(UserWarning, match="6 of 8 items have no 'patient' key") as record:
        folds = patient_grouped_folds(items, num_folds=3)
    assert len(record) == 1
    assert folds[0] == folds[1]
    assert sorted(np.bincount(folds).tolist()) == [2, 3, 3]


def test_folds_errors():
    with pytest.raises(ValueError, match="2 'patient' groups into 4 folds"):
        patient_grouped_folds(_good_items(), num_folds=4)
    with pytest.raises(ValueError, match="num_folds"):
        patient_grouped_folds(_cohort(), num_folds=1)
    with pytest.raises(ValueError, match="empty"):
        patient_grouped_folds([], num_folds=2)


def test_select_fold():
    items = _cohort()
    folds = patient_grouped_folds(items, num_folds=4)
    for fold in range(4):
        train = select_fold(items, fold, "train")
        val = select_fold(items, fold, "val")
        assert len(train) + len(val) == len(items)
        assert val == [it for it, f in zip(items, folds) if f == fold]
        assert {it["patient"] for it in train}.isdisjoint({it["patient"] for it in val})
    with pytest.raises(ValueError, match="split must be one of"):
        select_fold(items, 0, "test")
    for bad in (4, -1, 1.5):
        with pytest.raises(ValueError, match=r"fold must be an integer in \[0, 4\)"):
            select_fold(items, bad)


def test_resolve_datalist_demo(tmp_path):
    assert "bmd_xray" in DEMO_GENERATORS and "lvef_echo" in DEMO_GENERATORS
    demo_dir = str(tmp_path / "cache")
    expected = os.path.join(demo_dir, "dataset.json")
    for dataset_dir in (None, "", "None"):
        path = resolve_datalist(dataset_dir, "bmd_xray", demo_dir, num_patients=3, image_size=32)
        assert path == expected and os.path.isfile(path)
    with pytest.raises(ValueError, match="Unknown demo dataset 'nope'"):
        resolve_datalist(None, "nope", demo_dir)


def test_resolve_datalist_user_data(tmp_path):
    path = _write(tmp_path, {"training": _good_items()})
    assert resolve_datalist(path, "bmd_xray", str(tmp_path / "unused")) == path
    with pytest.raises(FileNotFoundError, match="missing.json"):
        resolve_datalist(str(tmp_path / "missing.json"), "bmd_xray", str(tmp_path / "unused"))
    os.rename(path, tmp_path / "dataset.json")
    assert resolve_datalist(str(tmp_path), "bmd_xray", "unused") == os.path.join(str(tmp_path), "dataset.json")
    assert resolve_datalist(str(tmp_path), "bmd_xray", "unused", datalist_name="dataset.json")
    with pytest.raises(FileNotFoundError, match=r"Expected a datalist at .*other\.json.*has no 'other\.json'"):
        resolve_datalist(str(tmp_path), "bmd_xray", "unused", datalist_name="other.json")
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        resolve_datalist(str(tmp_path / "absent"), "bmd_xray", "unused")
    assert not os.path.exists("unused")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_datalist(tmp_path, "bmd_xray", "unused")  # os.PathLike accepted


def test_parse_number_shared_by_the_readers():
    where = "FileList.csv line 4 (FileName='x')"
    assert parse_number(0.71, where) == 0.71 and type(parse_number(1, where)) is float
    assert parse_number(" 61.2 ", where, "EF") == 61.2 and parse_number(["0.5"], where) == 0.5
    assert parse_number("201.0", where, "NumberOfFrames", integer=True) == 201
    assert type(parse_number(np.float32(2.6), where, integer=True)) is int
    for bad, shown in [("n/a", "'n/a'"), ("0,71", "'0,71'"), ("nan", "'nan'"), (float("inf"), "inf"), (True, "True")]:
        with pytest.raises(ValueError, match=re.escape(f"{where}: EF must be a finite number, got {shown}.")):
            parse_number(bad, where, "EF")
    for missing, shown in [(None, "None"), ("", "''"), ("  ", "'  '"), ([None], "None")]:
        message = f"{where}: label must be a finite number, got {shown} (label is missing)."
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_number(missing, where)
    # optional (informational) columns: missing -> NaN, NaN kept, garbage still rejected
    assert np.isnan(parse_number("", where, "ESV", optional=True))
    assert np.isnan(parse_number(None, where, "FPS", optional=True))
    assert np.isnan(parse_number("nan", where, "NumberOfFrames", integer=True, optional=True))
    with pytest.raises(ValueError, match=re.escape(f"{where}: ESV must be a number, got 'abc'.")):
        parse_number("abc", where, "ESV", optional=True)


def test_items_fingerprint():
    items = [{"image": "/d/a.png", "label": 0.7, "patient": "P1"}, {"image": "/d/b.png", "label": 0.5}]
    fp = items_fingerprint(items, datalist="/d/dataset.json", fold=0, num_folds=4)
    assert fp["datalist"] == "/d/dataset.json" and fp["num_items"] == 2 and fp["fold"] == 0
    assert fp == items_fingerprint([dict(i) for i in items], datalist="/d/dataset.json", fold=0, num_folds=4)
    edited = [items[0], dict(items[1], label=0.51)]
    assert (
        items_fingerprint(edited, datalist="/d/dataset.json", fold=0, num_folds=4)["items_sha256"] != fp["items_sha256"]
    )
    assert json.loads(json.dumps(fp)) == fp


def test_check_loader_batches_says_items_and_batch_size():
    from monai.data import DataLoader

    items = list(range(6))
    loader = DataLoader(items, batch_size=4, drop_last=True)
    assert check_loader_batches(loader) is loader
    with pytest.raises(ValueError, match=r"yields no batch: 6 training items, batch_size 20 with drop_last=True"):
        check_loader_batches(DataLoader(items, batch_size=20, drop_last=True))
    with pytest.raises(ValueError, match="lower batch_size to at most 6"):
        check_loader_batches(DataLoader(items, batch_size=20, drop_last=True))


def test_resolve_datalist_reuses_existing_demo(tmp_path, capsys):
    """Inference without dataset_dir must read the demo the model was trained on, not regenerate it."""
    demo_dir = str(tmp_path / "demo")
    trained_on = resolve_datalist(None, "bmd_xray", demo_dir, num_patients=4, image_size=32)
    assert "using the 'bmd_xray' demo data" in capsys.readouterr().out
    stamp = os.stat(trained_on).st_mtime_ns
    path = resolve_datalist("", "bmd_xray", demo_dir, reuse_existing=True)  # the generator's defaults differ
    assert path == trained_on and os.stat(path).st_mtime_ns == stamp
    out = capsys.readouterr().out
    assert "using the existing 'bmd_xray' demo data" in out and "num_patients=4" in out
    fresh = resolve_datalist(None, "bmd_xray", str(tmp_path / "new"), reuse_existing=True, num_patients=3)
    assert os.path.isfile(fresh) and "num_patients=3" in capsys.readouterr().out


def test_worker_tempdir_not_left_behind(tmp_path):
    """Persistent DataLoader workers are terminated at exit and used to leave pymp-* folders in the temp dir."""
    script = (
        "import torch\n"
        "from monai.data import DataLoader\n"
        "from monai_contrastive.data import share_worker_tempdir\n"
        "share_worker_tempdir()\n"
        "loader = DataLoader([torch.zeros(3)] * 8, batch_size=2, num_workers=2, persistent_workers=True)\n"
        "for _ in range(2):\n"
        "    for b in loader:\n"
        "        pass\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("pymp-")]
