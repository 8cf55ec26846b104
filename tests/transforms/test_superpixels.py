"""Felzenszwalb superpixels inside the body, the on-disk cache that computes them once, and the paired elastic view
whose region map follows its image."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, PersistentDataset
from monai.transforms import Compose

import monai_contrastive.transforms.ct.array as ct_array
from monai_contrastive.data import item_file_hash, transform_settings_hash
from monai_contrastive.transforms.ct import FelzenszwalbSuperpixels, FelzenszwalbSuperpixelsd, body_mask

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "lrc_multiorgan_ct")


def _phantom(h=64, w=64, d=3):
    """Air around an ellipse of fat with two soft-tissue organs and a gas bubble inside (HU)."""
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (h * 0.4)) ** 2 + ((xx - w / 2) / (w * 0.45)) ** 2 <= 1
    vol = np.full((h, w), -1000.0)
    vol[body] = -100.0
    vol[(yy - 25) ** 2 + (xx - 22) ** 2 < 64] = 60.0
    vol[(yy - 40) ** 2 + (xx - 42) ** 2 < 49] = 200.0
    vol[(yy - 32) ** 2 + (xx - 48) ** 2 < 9] = -900.0  # bowel gas: inside the body
    vol = np.repeat(vol[..., None], d, axis=-1)
    return vol.astype(np.float32), np.repeat(body[..., None], d, axis=-1)


def test_body_mask_is_the_body_with_its_holes():
    vol, body = _phantom()
    vol[0:3, 0:3] = 100.0  # a small bright object outside the body (the table) is not the body
    mask = body_mask(vol)
    assert mask.dtype == bool and np.array_equal(mask, body)
    assert not body_mask(np.full((4, 4, 2), -1000.0)).any()


def test_superpixels_stay_inside_the_body_and_follow_min_size():
    vol, body = _phantom()
    img = MetaTensor(torch.as_tensor(vol)[None], affine=torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0])))
    few = FelzenszwalbSuperpixels(min_size=400, sigma=1.0)(img)
    many = FelzenszwalbSuperpixels(min_size=20, sigma=0.5)(img)
    assert isinstance(few, MetaTensor) and torch.equal(few.affine, img.affine) and few.dtype == torch.int32
    assert few.shape == img.shape
    for regions in (few, many):
        r = regions[0].numpy()
        assert not r[~body].any() and (r[body] > 0).all()  # 0 exactly outside the body
        for z in range(r.shape[-1]):  # ids 1..K, consecutive, per slice
            ids = np.unique(r[..., z][r[..., z] > 0])
            assert np.array_equal(ids, np.arange(1, ids.size + 1))
    k_few = len(np.unique(few[0, ..., 0])) - 1
    k_many = len(np.unique(many[0, ..., 0])) - 1
    assert 1 <= k_few < k_many
    # regions follow the organ's edge: the region holding most of the bright organ lies (nearly) inside it
    organ = vol[..., 0] == 200.0
    ids, counts = np.unique(many[0, ..., 0].numpy()[organ], return_counts=True)
    main = many[0, ..., 0].numpy() == ids[np.argmax(counts)]
    assert organ[main].mean() > 0.9
    # deterministic (it is cached)
    assert torch.equal(FelzenszwalbSuperpixels(min_size=20, sigma=0.5)(img), many)


def test_superpixels_bad_input_named():
    img = MetaTensor(torch.zeros(1, 8, 8), meta={"filename_or_obj": "/data/slice.nii.gz"})
    with pytest.raises(ValueError, match="slice.nii.gz"):
        FelzenszwalbSuperpixels()(img)
    with pytest.raises(KeyError, match="'image'"):
        FelzenszwalbSuperpixelsd("image")({"label": torch.zeros(1, 4, 4, 2)})


def test_cache_computes_superpixels_once_and_is_keyed_by_settings(tmp_path, monkeypatch):
    import nibabel as nib

    vol, _ = _phantom(d=2)
    path = str(tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    calls = []
    original = ct_array.FelzenszwalbSuperpixels.slice_regions

    def counting(self, window, body):
        calls.append(self.min_size)
        return original(self, window, body)

    monkeypatch.setattr(ct_array.FelzenszwalbSuperpixels, "slice_regions", counting)

    def dataset(min_size):
        from monai.transforms import EnsureChannelFirstd, LoadImaged

        t = Compose(
            [
                LoadImaged("image", image_only=True),
                EnsureChannelFirstd("image"),
                FelzenszwalbSuperpixelsd("image", min_size=min_size),
            ]
        )
        return PersistentDataset(
            [{"image": path}],
            t,
            str(tmp_path / "cache"),
            hash_func=item_file_hash,
            hash_transform=transform_settings_hash,
        )

    first = dataset(50)[0]["regions"]
    assert calls == [50, 50]  # cold: one call per slice
    again = dataset(50)[0]["regions"]  # a new dataset object (a new run): read from disk
    assert calls == [50, 50] and torch.equal(torch.as_tensor(first), torch.as_tensor(again))
    dataset(20)[0]
    assert calls == [50, 50, 20, 20]  # another min_size: another cache entry, not the stale one
    assert len(os.listdir(tmp_path / "cache")) == 2
    # the same path rewritten: processed again
    nib.save(nib.Nifti1Image(vol + 1.0, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    os.utime(path, ns=(1, 1))
    dataset(50)[0]
    assert calls[-2:] == [50, 50] and len(calls) == 6


def test_transform_hash_is_stable_across_constructions():
    a = transform_settings_hash([FelzenszwalbSuperpixelsd("image", min_size=10)])
    b = transform_settings_hash([FelzenszwalbSuperpixelsd("image", min_size=10)])
    c = transform_settings_hash([FelzenszwalbSuperpixelsd("image", min_size=11)])
    assert a == b != c


def test_paired_elastic_view_moves_the_regions_with_the_image():
    """The pretraining config's view pair: one elastic draw for image_2 (bilinear) and regions_2 (nearest)."""
    parser = ConfigParser()
    parser.read_config([os.path.join(BUNDLE, "configs", f) for f in ("pretrain_common.json", "pretrain_lrc.json")])
    parser["elastic#spacing"] = [8, 8]
    parser["elastic#magnitude_range"] = [2.0, 3.0]
    views = Compose([parser.get_parsed_content("train#paired_view"), parser.get_parsed_content("train#elastic")])
    views.set_random_state(0)
    coarse = torch.arange(16).reshape(4, 4).float() + 1
    regions = torch.nn.functional.interpolate(coarse[None, None], size=(64, 64), mode="nearest")[0]
    d = views({"image": regions.clone() / 16.0, "regions": regions.to(torch.int16)})
    r2, img2 = d["regions_2"], d["image_2"]
    assert not torch.equal(r2.float(), regions)  # it warped
    # away from region edges, the warped image intensity still names the warped region
    agree = (torch.round(img2 * 16) == r2).float().mean()
    unwarped = (torch.round(img2 * 16) == regions).float().mean()
    assert agree > 0.85 and agree > unwarped + 0.05
    assert torch.equal(d["regions"].float(), regions)  # the query view is untouched
    assert set(torch.unique(r2).tolist()) <= set(range(17))  # nearest: no new ids


def _pretrain_config(method: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(
        [os.path.join(BUNDLE, "configs", f) for f in ("pretrain_common.json", f"pretrain_{method}.json")]
    )
    return parser


def test_pretrain_config_keys_are_documented():
    cfg = _pretrain_config("lrc")
    assert cfg["temperature"] == 0.07 and cfg["learning_rate"] == 1e-4 and cfg["weight_decay"] == 1e-4
    moco = _pretrain_config("moco")
    assert moco["learning_rate"] == 0.03 and moco["momentum"] == 0.9 and moco["embedding_dim"] == 128
    assert moco["weight_decay"] == 1e-4 and moco["train#dataloader#drop_last"] == "@drop_last" and moco["drop_last"]


def test_method_configs_override_only_what_the_method_adds():
    """pretrain_lrc.json / pretrain_moco.json are thin: no key of pretrain_common.json is repeated with its value."""
    with open(os.path.join(BUNDLE, "configs", "pretrain_common.json")) as f:
        common = json.load(f)
    for method in ("lrc", "moco"):
        with open(os.path.join(BUNDLE, "configs", f"pretrain_{method}.json")) as f:
            own = json.load(f)
        assert own["method"] == method
        repeated = [k for k, v in own.items() if k in common and common[k] == v]
        assert not repeated, (method, repeated)
        assert len(own) < len(common) / 2, (method, len(own), len(common))
    lrc = _pretrain_config("lrc")
    assert lrc.get_parsed_content("ckpt_dir").endswith(os.path.join("models", "pretrain_lrc"))
    assert [type(t).__name__ for t in lrc.get_parsed_content("load_preprocessing")][5] == "FelzenszwalbSuperpixelsd"


def test_file_digest_follows_content_not_mtime(tmp_path):
    from monai_contrastive.data import file_digest

    p = tmp_path / "w.pt"
    p.write_bytes(b"abc")
    first = file_digest([str(p), ""])
    os.utime(p, ns=(5, 5))
    assert file_digest([str(p), ""]) == first and first.endswith(",")
    p.write_bytes(b"abd")
    assert file_digest([str(p), ""]) != first
    assert file_digest(str(tmp_path / "missing.pt")) == ""


def test_item_hash_follows_files_and_dicom_series_folders(tmp_path):
    """The cache key changes when a named file is replaced, and when a slice of a DICOM series folder is replaced,
    added or removed; it does not change otherwise."""
    vol = tmp_path / "ct.nii.gz"
    vol.write_bytes(b"a")
    series = tmp_path / "series"
    series.mkdir()
    (series / "IM0001").write_bytes(b"slice1")
    (series / "IM0002").write_bytes(b"slice2")
    item = {"image": str(series), "other": str(vol)}
    first = item_file_hash(item)
    assert item_file_hash(dict(item)) == first
    os.utime(series / "IM0002", ns=(1, 1))  # a slice rewritten (mtime differs)
    second = item_file_hash(item)
    assert second != first
    (series / "IM0003").write_bytes(b"slice3")
    third = item_file_hash(item)
    assert third not in (first, second)
    (series / "IM0003").unlink()
    assert item_file_hash(item) == second
    vol.write_bytes(b"bb")
    assert item_file_hash(item) != second
