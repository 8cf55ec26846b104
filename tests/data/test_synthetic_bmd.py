from __future__ import annotations

import json
import os

import numpy as np
import pytest
from monai.transforms import LoadImage
from scipy.stats import spearmanr
from skimage.filters import threshold_otsu

from monai_contrastive.data import generate_bmd_demo, load_regression_datalist
from monai_contrastive.data.synthetic_bmd import BMD_RANGE

OLD_NS = 1_000_000_000_000_000_000  # 2001-09-09: an mtime no generation can produce


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _all_items(datalist: dict) -> list[dict]:
    return datalist["training"] + datalist["testing"]


def _age(paths: list[str]) -> None:
    for p in paths:
        os.utime(p, ns=(OLD_NS, OLD_NS))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    """The default cohort size (240 patients) at a reduced image size, to keep the tests fast."""
    return generate_bmd_demo(str(tmp_path_factory.mktemp("bmd_cohort")), num_patients=240, image_size=128)


def test_datalist_format(cohort):
    datalist = _read(cohort)
    assert {"name", "description", "label_mean", "training", "testing"} <= set(datalist)
    root = os.path.dirname(cohort)
    for item in _all_items(datalist):
        assert set(item) == {"image", "label", "patient"}
        assert item["image"] == f"images/{os.path.basename(item['image'])}"
        assert os.path.basename(item["image"]).startswith(item["patient"] + "_")
        assert os.path.isfile(os.path.join(root, item["image"]))
        assert isinstance(item["label"], float)
    train_labels = [it["label"] for it in datalist["training"]]
    assert datalist["label_mean"] == pytest.approx(np.mean(train_labels), abs=1e-5)
    assert datalist["numTraining"] == len(datalist["training"])
    assert datalist["numTest"] == len(datalist["testing"])
    assert _read(os.path.join(root, "demo_params.json"))["num_patients"] == 240


def test_label_statistics(cohort):
    per_patient = {it["patient"]: it["label"] for it in _all_items(_read(cohort))}
    assert len(per_patient) == 240
    labels = np.array(list(per_patient.values()))
    assert labels.mean() == pytest.approx(0.70, abs=0.03)
    assert labels.std() == pytest.approx(0.13, abs=0.03)
    assert labels.min() >= BMD_RANGE[0] and labels.max() <= BMD_RANGE[1]


def test_films_and_split(cohort):
    datalist = _read(cohort)
    films: dict[str, list[dict]] = {}
    for item in _all_items(datalist):
        films.setdefault(item["patient"], []).append(item)
    counts = np.array([len(v) for v in films.values()])
    assert counts.min() >= 1 and counts.max() <= 3
    assert 1.15 <= counts.mean() <= 1.5  # paper: 1.31 films per patient
    for items in films.values():
        assert len({it["label"] for it in items}) == 1  # one DXA reading per patient
        assert len({it["image"] for it in items}) == len(items)
    train_patients = {it["patient"] for it in datalist["training"]}
    test_patients = {it["patient"] for it in datalist["testing"]}
    assert train_patients.isdisjoint(test_patients)
    assert len(test_patients) == 48  # 20 % of 240


def test_images_readable_and_label_drives_image(cohort):
    items = load_regression_datalist(cohort, "training") + load_regression_datalist(cohort, "testing")
    loader = LoadImage(image_only=True)
    labels, bone_contrast, mean_intensity = [], [], []
    for item in items:
        image = np.asarray(loader(item["image"]), dtype=np.float64)
        assert image.shape == (128, 128)
        assert 0 <= image.min() and image.max() <= 255 and image.std() > 5
        # bone region: pixels above the Otsu threshold; contrast to the rest in units of the image's spread
        threshold = threshold_otsu(image)
        bone_contrast.append((image[image > threshold].mean() - image[image <= threshold].mean()) / image.std())
        mean_intensity.append(image.mean())
        labels.append(item["label"])
    rho = spearmanr(labels, bone_contrast)[0]
    assert rho > 0.3, f"bone contrast does not follow the label (Spearman {rho:.3f})"
    r_mean = np.corrcoef(labels, mean_intensity)[0, 1]
    assert abs(r_mean) < 0.9, f"mean intensity gives the label away (Pearson {r_mean:.3f})"


def test_determinism(tmp_path):
    kwargs = {"num_patients": 6, "image_size": 64, "test_fraction": 0.34}
    path_a = generate_bmd_demo(str(tmp_path / "a"), seed=3, **kwargs)
    path_b = generate_bmd_demo(str(tmp_path / "b"), seed=3, **kwargs)
    path_c = generate_bmd_demo(str(tmp_path / "c"), seed=4, **kwargs)
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
        assert fa.read() == fb.read()
    for item in _all_items(_read(path_a)):
        with open(tmp_path / "a" / item["image"], "rb") as fa, open(tmp_path / "b" / item["image"], "rb") as fb:
            assert fa.read() == fb.read()
    labels = [it["label"] for it in _all_items(_read(path_a))]
    assert labels != [it["label"] for it in _all_items(_read(path_c))]
    # patient i does not depend on the cohort size
    bigger = generate_bmd_demo(str(tmp_path / "d"), seed=3, num_patients=8, image_size=64, test_fraction=0.34)
    by_patient = {it["patient"]: it["label"] for it in _all_items(_read(bigger))}
    assert all(by_patient[it["patient"]] == it["label"] for it in _all_items(_read(path_a)))


def test_caching_and_regeneration(tmp_path):
    out = str(tmp_path / "demo")
    path = generate_bmd_demo(out, num_patients=4, image_size=48, test_fraction=0.25)
    assert path == os.path.join(out, "dataset.json")
    files = [path, os.path.join(out, "demo_params.json")]
    files += [os.path.join(out, it["image"]) for it in _all_items(_read(path))]
    _age(files)
    assert generate_bmd_demo(out, num_patients=4, image_size=48, test_fraction=0.25) == path
    assert all(os.stat(f).st_mtime_ns == OLD_NS for f in files), "a cached dataset was rewritten"

    # a change of parameters, overwrite=True or an interrupted generation (no dataset.json) regenerates
    generate_bmd_demo(out, num_patients=4, image_size=48, test_fraction=0.25, overwrite=True)
    assert all(os.stat(f).st_mtime_ns != OLD_NS for f in files)
    _age(files)
    os.remove(path)
    generate_bmd_demo(out, num_patients=4, image_size=48, test_fraction=0.25)
    assert all(os.stat(f).st_mtime_ns != OLD_NS for f in files)
    generate_bmd_demo(out, num_patients=3, image_size=48, test_fraction=0.25)
    assert _read(os.path.join(out, "demo_params.json"))["num_patients"] == 3
    listed = {os.path.basename(it["image"]) for it in _all_items(_read(path))}
    assert set(os.listdir(os.path.join(out, "images"))) == listed  # no stale or temporary files left


def test_no_test_split(tmp_path):
    datalist = _read(generate_bmd_demo(str(tmp_path), num_patients=3, image_size=32, test_fraction=0.0))
    assert datalist["testing"] == [] and len({it["patient"] for it in datalist["training"]}) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_patients": 0}, "num_patients"),
        ({"num_patients": 2.5}, "num_patients"),
        ({"image_size": 16}, "image_size"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"num_patients": 1, "test_fraction": 0.5}, "at least 2 patients"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_bmd_demo(str(tmp_path), **kwargs)
    assert not os.path.exists(tmp_path / "dataset.json")
