"""DCC-CL preprocessing (§4.2) and organ-patch views (§3.1): percentile normalisation, organ patches from a coarse
mask, and paired image / attention views whose pairing the DCC loss relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ConcatItemsd, CopyItemsd, RandFlipd, RandRotated

from monai_contrastive.engines import PrepareViewBatch
from monai_contrastive.losses import DynamicContrastCorrelationLoss
from monai_contrastive.transforms.ct import (
    OrganPatchesd,
    PercentileNormalize,
    PercentileNormalized,
    RandResizedCrop,
    RandResizedCropd,
)


def test_percentile_normalize_matches_numpy():
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 200, size=(1, 20, 18, 7)).astype(np.float32)
    out = PercentileNormalize()(torch.as_tensor(hu))
    windowed = np.clip(hu, -175, 250)
    lo, hi = np.percentile(windowed, [1, 99])
    ref = np.clip((windowed - lo) / (hi - lo), 0, 1)
    assert np.allclose(out.numpy(), ref, atol=1e-5)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    d = PercentileNormalized("image")({"image": MetaTensor(torch.as_tensor(hu), affine=torch.eye(4) * 2)})
    assert isinstance(d["image"], MetaTensor) and torch.allclose(d["image"].affine.float(), torch.eye(4) * 2)
    assert torch.equal(PercentileNormalize()(torch.full((1, 4, 4, 2), 100.0)), torch.zeros(1, 4, 4, 2))


def _volume(size=(40, 36, 6)):
    """Organ 1 a square at intensity 0.8, organ 2 a square at 0.3, background 0.1; the label is the coarse mask."""
    img = torch.full((1, *size), 0.1)
    mask = torch.zeros((1, *size))
    img[0, 5:15, 5:15, :] = 0.8
    mask[0, 5:15, 5:15, :] = 1
    img[0, 22:34, 20:30, 1:5] = 0.3
    mask[0, 22:34, 20:30, 1:5] = 2
    return img, mask


def test_organ_patches_centre_on_the_organ_with_binary_maps():
    img, mask = _volume()
    label = mask.clone()
    label[0, 5:7, 5:15, :] = 0  # ground truth slightly smaller than the coarse mask
    t = OrganPatchesd(num_classes=3, patch_size=16, num_samples=3, phases=["non-contrast", "venous"])
    t.set_random_state(0)
    out = t({"image": img, "coarse": mask, "label": label, "phase": "venous", "case": "c1"})
    assert len(out) == 6 and [int(o["organ"]) for o in out] == [1, 1, 1, 2, 2, 2]
    for o in out:
        organ = int(o["organ"])
        assert o["image"].shape == (1, 16, 16) and o["attention"].shape == (1, 16, 16)
        assert int(o["attention"][0, 8, 8]) == 1  # the patch centre is a voxel of the organ
        assert set(torch.unique(o["attention"]).tolist()) <= {0.0, 1.0}
        inside = o["attention"] > 0
        assert torch.allclose(o["image"][inside], torch.tensor(0.8 if organ == 1 else 0.3))
        assert bool((o["label"] <= o["attention"]).all())
        assert int(o["phase_index"]) == 1 and o["case"] == "c1"


def test_organ_patches_errors_name_the_file():
    img, mask = _volume()
    img = MetaTensor(img, meta={"filename_or_obj": "/data/CT0007.nii.gz"})
    t = OrganPatchesd(num_classes=3, patch_size=16, phases=["venous"], require_phase=True)
    with pytest.raises(ValueError, match="CT0007.nii.gz.*phase"):
        t({"image": img, "coarse": mask})
    with pytest.raises(ValueError, match="CT0007.nii.gz.*no organ"):
        OrganPatchesd(num_classes=3, patch_size=16)({"image": img, "coarse": torch.zeros_like(mask)})


def test_rand_resized_crop_area_and_shared_draw():
    c = RandResizedCrop(scale=(0.3, 0.7))
    c.set_random_state(0)
    for _ in range(20):
        c.randomize((64, 64))
        _, _, h, w = c.box
        assert 0.3 * 64 * 64 * 0.9 <= h * w <= 0.7 * 64 * 64 * 1.1
    x = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)
    d = RandResizedCropd(["a", "b"], mode=["bilinear", "nearest"]).set_random_state(3)({"a": x, "b": x.clone()})
    assert d["a"].shape == (1, 64, 64)
    assert torch.allclose(d["a"], d["b"], atol=64.0)  # the same box for both keys


def _view_pipeline(seed: int, image_mode: str = "bilinear") -> Compose:
    """Two views of each organ patch, each its own crop/resize, rotation and flip over image + attention."""
    views = []
    for suffix in ("", "_2"):
        keys = [f"image{suffix}", f"attention{suffix}"]
        views += [
            RandResizedCropd(keys, scale=(0.3, 0.7), mode=[image_mode, "nearest"]),
            RandRotated(keys, range_x=np.pi / 6, prob=1.0, mode=[image_mode, "nearest"], padding_mode="zeros"),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            ConcatItemsd(keys, name=f"image{suffix}"),
        ]
    t = Compose([CopyItemsd(["image", "attention"], times=1, names=["image_2", "attention_2"]), *views])
    t.set_random_state(seed)
    return t


def test_each_view_keeps_its_own_attention_map():
    """d of every view is the organ's intensity only if each view's attention map went through that view's own
    crop / rotation / flip; pairing view 2's map with view 1's image (or drawing image and map independently)
    puts background pixels (0.1) inside the region and moves d away from the organ's intensity."""
    img, mask = _volume((48, 48, 4))
    patches = OrganPatchesd(num_classes=3, patch_size=24, num_samples=2).set_random_state(1)(
        {"image": img, "coarse": mask}
    )
    pipe = _view_pipeline(5, image_mode="nearest")  # same sampling for both channels: d is exact
    items = [pipe(p) for p in patches]
    batch = {k: torch.stack([torch.as_tensor(i[k]) for i in items]) for k in ("image", "image_2")}
    batch["organ"] = torch.stack([i["organ"] for i in items])
    laid = PrepareViewBatch(views=["image", "image_2"], sample_keys=["organ"])(batch)[1]
    loss = DynamicContrastCorrelationLoss(gather_distributed=False)
    d, valid = loss.intensities(laid["image"])
    expected = torch.where(laid["organ"] == 1, torch.tensor(0.8), torch.tensor(0.3))
    assert bool(valid.all())
    assert torch.allclose(d, expected, atol=1e-6)
    n = len(items)
    swapped = torch.cat([laid["image"][n:, :1], laid["image"][:n, 1:]], 1)  # view 2's image with view 1's map
    d_swapped, _ = loss.intensities(swapped)
    assert float((d_swapped - expected[n:]).abs().max()) > 0.1
