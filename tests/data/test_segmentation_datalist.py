"""Segmentation datalists: the checked lists of the fine-tuning and the image pool of self-supervised pretraining."""

from __future__ import annotations

import json

import pytest

from monai_contrastive.data import list_images, load_image_items, load_segmentation_datalist, take_items


def _datalist(tmp_path, lists: dict) -> str:
    for items in lists.values():
        for item in items:
            for k in ("image", "label"):
                if k in item and not item[k].startswith("missing"):
                    (tmp_path / item[k]).write_bytes(b"x")
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(lists))
    return str(path)


def test_pretraining_pool_skips_missing_and_empty_lists(tmp_path):
    """An unlabelled-only pretraining set (empty or absent 'training') is a pool; the empty list is not an error."""
    dl = _datalist(tmp_path, {"unlabelled": [{"image": "u0.nii.gz"}, {"image": "u1.nii.gz"}], "training": []})
    items = load_image_items(dl)
    assert [i["image"] for i in items] == [str(tmp_path / "u0.nii.gz"), str(tmp_path / "u1.nii.gz")]
    dl = _datalist(tmp_path, {"unlabelled": [{"image": "u0.nii.gz"}]})
    assert len(load_image_items(dl)) == 1
    # the labelled training images join the pool, labels unused
    dl = _datalist(
        tmp_path, {"unlabelled": [{"image": "u0.nii.gz"}], "training": [{"image": "t0.nii.gz", "label": "l0.nii.gz"}]}
    )
    assert [i["image"] for i in load_image_items(dl)] == [str(tmp_path / "u0.nii.gz"), str(tmp_path / "t0.nii.gz")]
    assert all("label" not in i for i in load_image_items(dl))


def test_pretraining_pool_errors_name_the_problem(tmp_path):
    dl = _datalist(tmp_path, {"unlabelled": [], "training": []})
    with pytest.raises(KeyError, match=r"no images in the lists .* \(empty: \['training', 'unlabelled'\]\)"):
        load_image_items(dl)
    dl = _datalist(tmp_path, {"validation": [{"image": "v.nii.gz", "label": "vl.nii.gz"}]})
    with pytest.raises(KeyError, match="no images in the lists"):
        load_image_items(dl)
    dl = _datalist(tmp_path, {"unlabelled": [{"image": "u0.nii.gz"}, {"image": "missing.nii.gz"}]})
    with pytest.raises(FileNotFoundError, match=r"unlabelled\[1\] 'image': file .*missing.nii.gz"):
        load_image_items(dl)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_items(str(tmp_path / "nope.json"))


def test_labelled_lists_are_strict(tmp_path):
    """Fine-tuning and evaluation lists must exist, be non-empty and carry labels."""
    dl = _datalist(tmp_path, {"training": [], "validation": [{"image": "v.nii.gz"}]})
    with pytest.raises(ValueError, match="'training' list is empty"):
        load_segmentation_datalist(dl, "training")
    with pytest.raises(ValueError, match=r"validation\[0\]: no \['label'\]"):
        load_segmentation_datalist(dl, "validation")
    with pytest.raises(KeyError, match=r"no 'testing' list \(lists: \['training', 'validation'\]\)"):
        load_segmentation_datalist(dl, "testing")
    assert len(load_segmentation_datalist(dl, "validation", require_label=False, keys=("image",))) == 1


def test_take_items_nested_subsets():
    items = [{"i": i} for i in range(20)]
    ten, five = take_items(items, 10, seed=3), take_items(items, 5, seed=3)
    assert five == ten[:5] and len({d["i"] for d in ten}) == 10
    assert take_items(items, None) == items and take_items(items, "all") == items
    with pytest.raises(ValueError, match="asked for 21 training volumes, but the datalist has 20"):
        take_items(items, 21)
    with pytest.raises(ValueError, match="whole number"):
        take_items(items, 2.5)


def test_list_images_finds_files_and_dicom_series(tmp_path):
    """Volume files and DICOM series (subfolders of DICOM files, suffix-less PACS files found by their DICM marker)."""
    import nibabel as nib
    import numpy as np

    from ..helpers import write_ct_dicom_series

    vol = tmp_path / "src" / "ct.nii.gz"
    vol.parent.mkdir()
    hu = np.full((8, 8, 3), -1000, np.int16)
    hu[2:6, 2:6] = 40
    nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.5, 1])), str(vol))
    inputs = tmp_path / "in"
    write_ct_dicom_series(str(vol), str(inputs / "series_b"))
    (inputs / "notes").mkdir()
    (inputs / "notes" / "readme.txt").write_text("not DICOM")
    (inputs / "a.nii.gz").write_bytes(vol.read_bytes())
    (inputs / "b.txt").write_text("ignored")
    assert list_images(str(inputs)) == [str(inputs / "a.nii.gz"), str(inputs / "series_b")]
    # a folder of DICOM files is itself one series
    assert list_images(str(inputs / "series_b")) == [str(inputs / "series_b")]
    with pytest.raises(ValueError, match="no volume .* and no DICOM series"):
        list_images(str(inputs / "notes"))
    with pytest.raises(FileNotFoundError, match="not found"):
        list_images(str(tmp_path / "nope"))


def test_inference_items_from_input_folder_or_testing_list(tmp_path):
    """The LRC inference inputs: a given folder's volumes, else the datalist's testing images (no label needed)."""
    from monai_contrastive.data import inference_items

    dl = _datalist(tmp_path, {"testing": [{"image": "t1.nii.gz"}, {"image": "t0.nii.gz", "label": "t0_seg.nii.gz"}]})
    assert inference_items("", dl) == [{"image": str(tmp_path / "t1.nii.gz")}, {"image": str(tmp_path / "t0.nii.gz")}]
    folder = tmp_path / "new_cases"
    folder.mkdir()
    for name in ("b.nii.gz", "a.nii", "notes.txt"):
        (folder / name).write_bytes(b"x")
    # the datalist is not read when a folder is given (its testing list would point elsewhere)
    assert inference_items(str(folder), str(tmp_path / "absent.json")) == [
        {"image": str(folder / "a.nii")},
        {"image": str(folder / "b.nii.gz")},
    ]
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        inference_items(str(tmp_path / "missing_dir"), dl)
    with pytest.raises(KeyError, match="'testing'"):
        inference_items("", _datalist(tmp_path, {"training": [{"image": "x.nii.gz", "label": "y.nii.gz"}]}))
