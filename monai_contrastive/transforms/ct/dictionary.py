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
Dictionary versions of :py:mod:`monai_contrastive.transforms.ct.array`, and the MONAI transforms that sample random
axial slices for the 2D networks.

The shared CT pipeline of the segmentation bundles (3D networks stop before the slice sampler, or crop 3D patches
instead)::

    from monai.transforms import (
        Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityRanged, Spacingd
    )

    keys = ("image", "label")
    train_transforms = Compose(
        [
            LoadVolumed(keys),  # LoadImaged that names a file it cannot read
            ValidateCTd(num_classes=14),  # right after loading: names the file of a bad case
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS"),
            Spacingd(keys, pixdim=(0.8, 0.8, 2.5), mode=("bilinear", "nearest")),
            ScaleIntensityRanged("image", a_min=-160, a_max=240, b_min=0.0, b_max=1.0, clip=True),
            CropForegroundd(keys, source_key="image"),
            *axial_slice_sampler(keys, num_samples=4, label_key="label", num_classes=14),
        ]
    )

MONAI needs no dedicated 2D slice sampler: a crop of ``(-1, -1, 1)`` (``RandCropByLabelClassesd`` or
``RandSpatialCropSamplesd``) followed by ``SqueezeDimd(dim=-1)`` gives (C, H, W) MetaTensors whose 2D affine and
``pixdim`` are the in-plane spacing of the resampled grid (``SqueezeDim`` drops the slice axis from the affine);
``tests/transforms/test_ct.py`` checks that it does.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CropForegroundd,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByLabelClassesd,
    Randomizable,
    RandomizableTransform,
    RandSpatialCropSamplesd,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
    SqueezeDimd,
    Transform,
)
from monai.utils import PostFix, ensure_tuple, ensure_tuple_rep

from monai_contrastive.transforms.ct.array import (
    AboveHU,
    AsOrganLabels,
    FelzenszwalbSuperpixels,
    LoadVolume,
    OrganPatches,
    PercentileNormalize,
    RandCLEFAffine,
    RandResizedCrop,
    ValidateCT,
    check_ct_volume,
    ct_name,
    voxel_spacing,
)

__all__ = [
    "AsOrganLabelsd",
    "AsOrganLabelsD",
    "AsOrganLabelsDict",
    "CLEFPreprocessd",
    "CLEFPreprocessD",
    "CLEFPreprocessDict",
    "RandCLEFAffined",
    "RandCLEFAffineD",
    "RandCLEFAffineDict",
    "CoarseSegmentd",
    "CoarseSegmentD",
    "CoarseSegmentDict",
    "FelzenszwalbSuperpixelsd",
    "FelzenszwalbSuperpixelsD",
    "FelzenszwalbSuperpixelsDict",
    "LoadVolumed",
    "LoadVolumeD",
    "LoadVolumeDict",
    "OrganPatchesd",
    "OrganPatchesD",
    "OrganPatchesDict",
    "PercentileNormalized",
    "PercentileNormalizeD",
    "PercentileNormalizeDict",
    "RandResizedCropd",
    "RandResizedCropD",
    "RandResizedCropDict",
    "ResampleToSpacingd",
    "ResampleToSpacingD",
    "ResampleToSpacingDict",
    "ValidateCTd",
    "ValidateCTD",
    "ValidateCTDict",
    "axial_slice_sampler",
]


class LoadVolumed(LoadImaged):
    """Dictionary version of :py:class:`monai_contrastive.transforms.ct.LoadVolume`: MONAI's ``LoadImaged`` (same
    arguments) whose reading errors name the file, e.g. a truncated ``.nii.gz`` that nibabel only fails on when it
    reads the voxels."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # LoadImaged builds a LoadImage with these arguments; LoadVolume only adds the file name to its errors
        self._loader.__class__ = LoadVolume


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, bytes, os.PathLike))


class ValidateCTd(MapTransform):
    """
    Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.ValidateCT`: checks the image and label
    of one case right after ``LoadImaged`` (MetaTensors, or arrays with ``<key>_meta_dict`` from
    ``image_only=False``) and before ``EnsureChannelFirstd`` / any resampling; returns the item unchanged.

    Every error is a ``ValueError`` naming the file(s): a volume that is not 3D, a label whose shape or affine differs
    from its image's, a label value outside ``[0, num_classes)``, an image with no voxel above ``min_max_hu`` HU,
    a key that still holds a path (not loaded yet), and a missing label when ``allow_missing_label`` is False.

    Args:
        image_key: key of the CT volume.
        label_key: key of its label map; ``None`` checks the image only.
        num_classes: number of label values including background (14 for FLARE22); ``None`` skips the upper bound.
        min_max_hu: the image must have a voxel above this value (HU); ``None`` skips the check.
        allow_missing_label: an item without ``label_key`` (inference) passes; False raises for it.
        affine_atol: tolerance (mm) of the image / label affine comparison.
    """

    backend = ValidateCT.backend

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        num_classes: int | None = None,
        min_max_hu: float | None = -500.0,
        allow_missing_label: bool = True,
        affine_atol: float = 1e-3,
    ) -> None:
        super().__init__([image_key] + ([label_key] if label_key else []), allow_missing_keys=True)
        self.image_key = image_key
        self.label_key = label_key
        self.allow_missing_label = allow_missing_label
        self.validator = ValidateCT(num_classes=num_classes, min_max_hu=min_max_hu, affine_atol=affine_atol)

    def _loaded(self, d: Mapping, key: Hashable, name: str) -> Any:
        value = d[key]
        if _is_path(value):
            raise ValueError(
                f"ValidateCTd: {name} {value!s} under key {key!r} is not loaded; apply ValidateCTd after LoadImaged."
            )
        return value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise ValueError(
                f"ValidateCTd: the item has no image key {self.image_key!r} (keys: {sorted(map(str, d))})."
            )
        img = self._loaded(d, self.image_key, "image")
        img_meta = d.get(PostFix.meta(self.image_key))
        label = label_meta = None
        if self.label_key is not None:
            if d.get(self.label_key) is None:
                if not self.allow_missing_label:
                    name = ct_name(img, img_meta) or f"key {self.image_key!r}"
                    raise ValueError(f"ValidateCTd: image {name} has no label under {self.label_key!r}.")
            else:
                label = self._loaded(d, self.label_key, "label")
                label_meta = d.get(PostFix.meta(self.label_key))
        self.validator(img, label, img_meta, label_meta)
        return d


ValidateCTD = ValidateCTDict = ValidateCTd


def axial_slice_sampler(
    keys: KeysCollection,
    num_samples: int,
    label_key: str | None = None,
    ratios: Sequence[float] | None = None,
    num_classes: int | None = None,
    **crop_kwargs: Any,
) -> list[Transform]:
    """
    MONAI transforms that turn a channel-first volume (C, H, W, D) into ``num_samples`` random axial slices
    (C, H, W): a crop of ``(-1, -1, 1)`` then ``SqueezeDimd(dim=-1)``. Splice the list into a ``Compose``; the
    result is a list of ``num_samples`` dicts (MONAI's ``DataLoader`` flattens them into the batch).

    Put it after ``Orientationd`` (so that the last axis is inferior-superior, i.e. axial slices) and ``Spacingd``:
    each slice is a MetaTensor whose 2D affine and ``pixdim`` give the in-plane spacing, which is what
    spacing-aware losses and the 2D ``SliceInferer`` at test time rely on.

    Args:
        keys: keys cropped together (the same slice for all, e.g. ``("image", "label")``).
        num_samples: slices per volume.
        label_key: label map (1, H, W, D) to sample slices by class with ``RandCropByLabelClassesd`` (a slice
            through a random voxel of a class drawn with ``ratios``); ``None`` samples slices uniformly with
            ``RandSpatialCropSamplesd``.
        ratios: class sampling ratios (background first), e.g. ``[1] * 14``; ``None`` draws every class equally.
        num_classes: number of label values including background; defaults to ``len(ratios)``.
        crop_kwargs: further arguments of ``RandCropByLabelClassesd`` (``image_key``, ``warn``, ...) or
            ``RandSpatialCropSamplesd``.

    Returns:
        ``[crop, SqueezeDimd(keys, dim=-1)]``.

    Raises:
        ValueError: ``label_key`` without ``num_classes`` or ``ratios``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    roi = (-1, -1, 1)
    crop: Transform
    if label_key is not None:
        if num_classes is None and ratios is None:
            raise ValueError("axial_slice_sampler: sampling by label needs num_classes or ratios.")
        crop = RandCropByLabelClassesd(
            keys,
            label_key=label_key,
            spatial_size=roi,
            ratios=None if ratios is None else list(ratios),
            num_classes=num_classes if num_classes is not None else len(ensure_tuple(ratios)),
            num_samples=num_samples,
            **crop_kwargs,
        )
    else:
        crop = RandSpatialCropSamplesd(keys, roi_size=roi, num_samples=num_samples, random_size=False, **crop_kwargs)
    return [crop, SqueezeDimd(keys, dim=-1)]


class ResampleToSpacingd(Spacingd):
    """MONAI ``Spacingd`` that leaves non-dictionary ``<key>_*`` entries of the data alone.

    After resampling a NIfTI image, MONAI 1.6's ``Spacingd`` calls ``.update`` on every data entry whose name starts
    with ``<key>_``, assuming it is a meta dictionary. MONAI Label puts the study's path under ``image_path`` (a
    string), so a bundle using ``Spacingd`` fails there with ``'str' object has no attribute 'update'``. This
    subclass hides such entries during the call; everything else (arguments, inversion by ``Invertd``) is
    ``Spacingd``'s own.
    """

    def __call__(self, data, lazy: bool | None = None):
        d = dict(data)
        hidden = {
            k: d.pop(k)
            for k in list(d)
            if isinstance(k, str) and any(k.startswith(f"{key}_") for key in self.keys) and not isinstance(d[k], dict)
        }
        out = super().__call__(d, lazy=lazy)
        out.update(hidden)
        return out


ResampleToSpacingD = ResampleToSpacingDict = ResampleToSpacingd


class FelzenszwalbSuperpixelsd(MapTransform):
    """Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.FelzenszwalbSuperpixels`: the
    superpixel map of ``keys`` (one CT volume in HU, ``(1, H, W, D)``) written under ``regions_key``.

    Place it after resampling and before windowing and before the first random transform; the spatial transforms
    that follow (cropping, the elastic warp of the paired view) must list ``regions_key`` with ``mode="nearest"``.

    Args:
        keys: the CT image key (one key).
        regions_key: where the region map goes.
        kwargs: :py:class:`~monai_contrastive.transforms.ct.array.FelzenszwalbSuperpixels`'s arguments.
    """

    def __init__(self, keys: KeysCollection = "image", regions_key: str = "regions", **kwargs) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"FelzenszwalbSuperpixelsd: one image key, got {self.keys}.")
        self.regions_key = regions_key
        self.superpixels = FelzenszwalbSuperpixels(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        if key not in d:
            raise KeyError(f"FelzenszwalbSuperpixelsd: the item has no {key!r} (keys: {sorted(map(str, d))}).")
        d[self.regions_key] = self.superpixels(d[key])
        return d


FelzenszwalbSuperpixelsD = FelzenszwalbSuperpixelsDict = FelzenszwalbSuperpixelsd

LoadVolumeD = LoadVolumeDict = LoadVolumed


class PercentileNormalized(MapTransform):
    """Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.PercentileNormalize` (DCC-CL §4.2:
    window -175..250 HU, then min-max by each volume's 1st / 99th percentiles)."""

    backend = PercentileNormalize.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = PercentileNormalize(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d


PercentileNormalizeD = PercentileNormalizeDict = PercentileNormalized


class OrganPatchesd(Randomizable, MapTransform):
    """Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.OrganPatches`: one volume's item ->
    a list of organ-patch items (MONAI's ``DataLoader`` flattens lists into the batch, as for the crop samplers).

    Each output item holds ``image_key`` ``(1, P, P)`` (the image patch), ``attention_key`` ``(1, P, P)`` (the
    organ's binary coarse mask), ``label_key`` ``(1, P, P)`` (the organ's binary ground truth, when the item has a
    label), ``organ_key`` (int64, the organ class), and the copied per-volume keys ``copy_keys`` (``phase``,
    ``case``...) when present. With ``phases`` the item's ``phase`` (a name) is also written as its index under
    ``phase_index_key``, with ``organ * len(phases) + phase index`` (one class per organ and phase, the
    multi-label positives of AGCL) under ``organ_phase_key``; an item without one raises a ``ValueError`` naming
    its image file when ``require_phase``.

    Args:
        image_key: the normalised CT ``(1, H, W, D)``.
        coarse_key: the coarse multi-organ mask on the image's grid (the attention source).
        label_key: the ground-truth label map (optional per item).
        attention_key: output key of the attention map.
        organ_key: output key of the organ class.
        phases: phase names in index order (e.g. ``["non-contrast", "arterial", "venous", "delayed"]``).
        phase_key: item key of the phase name.
        phase_index_key: output key of the phase index.
        organ_phase_key: output key of the joint organ-phase class.
        require_phase: an item without a phase is an error (pretraining on organ + phase labels).
        copy_keys: per-volume keys copied into every patch item.
        kwargs: :py:class:`~monai_contrastive.transforms.ct.array.OrganPatches`'s arguments.
    """

    def __init__(
        self,
        image_key: str = "image",
        coarse_key: str = "coarse",
        label_key: str | None = "label",
        attention_key: str = "attention",
        organ_key: str = "organ",
        phases: Sequence[str] | None = None,
        phase_key: str = "phase",
        phase_index_key: str = "phase_index",
        organ_phase_key: str = "organ_phase",
        require_phase: bool = False,
        copy_keys: Sequence[str] = ("phase", "case"),
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, [image_key, coarse_key])
        self.image_key = image_key
        self.coarse_key = coarse_key
        self.label_key = label_key
        self.attention_key = attention_key
        self.organ_key = organ_key
        self.phases = list(phases) if phases is not None else None
        self.phase_key = phase_key
        self.phase_index_key = phase_index_key
        self.organ_phase_key = organ_phase_key
        self.require_phase = require_phase
        self.copy_keys = list(copy_keys)
        self.sampler = OrganPatches(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> OrganPatchesd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def _name(self, d: Mapping) -> str:
        img = d.get(self.image_key)
        return ct_name(img, d.get(PostFix.meta(self.image_key))) or str(d.get("case", "<unnamed item>"))

    def _phase_index(self, d: Mapping) -> int | None:
        phase = d.get(self.phase_key)
        if phase is None or phase == "":
            if self.require_phase:
                raise ValueError(
                    f"OrganPatchesd: image {self._name(d)} has no {self.phase_key!r} in its datalist item; the "
                    "organ + phase pretraining objectives (ce, agcl) need one per volume."
                )
            return None
        if self.phases is None:
            return None
        if phase not in self.phases:
            raise ValueError(f"OrganPatchesd: image {self._name(d)} has phase {phase!r}, not one of {self.phases}.")
        return self.phases.index(phase)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        for key in (self.image_key, self.coarse_key):
            if key not in d:
                raise KeyError(f"OrganPatchesd: item {self._name(d)} has no {key!r} (keys: {sorted(map(str, d))}).")
        phase_index = self._phase_index(d)
        label = d.get(self.label_key) if self.label_key else None
        patches = self.sampler(d[self.image_key], d[self.coarse_key], label)
        if not patches:
            raise ValueError(
                f"OrganPatchesd: the coarse mask of image {self._name(d)} holds no organ of classes "
                f"{self.sampler.organs}; no organ patch can be sampled (check the coarse segmentation)."
            )
        out = []
        for organ, img, att, lab in patches:
            item: dict[Hashable, Any] = {k: d[k] for k in self.copy_keys if k in d}
            item[self.image_key] = img
            item[self.attention_key] = att
            if lab is not None:
                item[self.label_key] = lab
            item[self.organ_key] = torch.tensor(organ, dtype=torch.long)
            if phase_index is not None:
                item[self.phase_index_key] = torch.tensor(phase_index, dtype=torch.long)
                n_phases = len(self.phases or [])
                item[self.organ_phase_key] = torch.tensor(organ * n_phases + phase_index, dtype=torch.long)
            out.append(item)
        return out


OrganPatchesD = OrganPatchesDict = OrganPatchesd


class RandResizedCropd(RandomizableTransform, MapTransform):
    """Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.RandResizedCrop`: one draw applied
    to all ``keys`` (a view's image and attention map move together), each with its own interpolation ``mode``
    (``"bilinear"`` for the image, ``"nearest"`` for a binary map). Use one instance per view for independent views.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: Sequence[float] = (0.3, 0.7),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        mode: Sequence[str] | str = "bilinear",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.cropper = RandResizedCrop(scale, ratio, prob=1.0)
        self.mode = ensure_tuple_rep(mode, len(self.keys))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandResizedCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(state=self.R)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        first = self.first_key(d)
        if first == () or not self._do_transform:
            return d
        self.cropper.randomize(d[first].shape[1:])
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = self.cropper(d[key], mode=mode, randomize=False)
        return d


RandResizedCropD = RandResizedCropDict = RandResizedCropd


class CoarseSegmentd(MapTransform):
    """DCC-CL §3.1: the coarse multi-organ mask ``A = Coarse(X)`` of a whole volume, written under ``output_key``.

    ``image_key`` holds the normalised volume ``(1, H, W, D)``; the network sees it resized to ``spatial_size`` (see
    :func:`~monai_contrastive.networks.coarse_logits`) and its argmax, back on the volume's grid, is stored as a
    ``uint8`` MetaTensor with the image's metadata. Deterministic, so a ``PersistentDataset`` caches it (key the
    cache folder by the coarse checkpoint's digest so that a retrained coarse network is not served stale masks).

    Args:
        image_key: the normalised CT.
        network: the trained coarse network (put in eval mode here).
        spatial_size: its low-resolution input size.
        output_key: where the mask goes.
        device: where the coarse network runs.
    """

    def __init__(
        self,
        image_key: str,
        network: torch.nn.Module,
        spatial_size: Sequence[int],
        output_key: str = "coarse",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__([image_key])
        self.image_key = image_key
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.spatial_size = [int(s) for s in spatial_size]
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data import MetaTensor

        from monai_contrastive.networks.dcc import coarse_logits

        d = dict(data)
        img = d[self.image_key]
        x = torch.as_tensor(img.as_tensor() if hasattr(img, "as_tensor") else img, dtype=torch.float32)
        with torch.no_grad():
            mask = coarse_logits(self.network, x[None].to(self.device), self.spatial_size).argmax(1)
        mask = mask.to(torch.uint8).cpu()
        d[self.output_key] = MetaTensor(mask, meta=dict(img.meta)) if isinstance(img, MetaTensor) else mask
        return d


CoarseSegmentD = CoarseSegmentDict = CoarseSegmentd


class _CheckCTd(MapTransform):
    def __init__(self, key: str, body_threshold: float | None) -> None:
        super().__init__(key)
        self.body_threshold = body_threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        if key not in d:
            raise KeyError(f"CLEFPreprocessd: the item has no image key {key!r} (keys: {sorted(map(str, d))}).")
        if _is_path(d[key]):
            raise ValueError(f"CLEFPreprocessd: image {d[key]!s} under {key!r} is not loaded; apply LoadVolumed first.")
        check_ct_volume(d[key], self.body_threshold, d.get(PostFix.meta(key)))
        return d


class _BodyMaskd(MapTransform):
    def __init__(self, key: str, body_key: str, body_threshold: float) -> None:
        super().__init__(key)
        self.body_key = body_key
        self.above = AboveHU(body_threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[self.keys[0]]
        d[self.body_key] = self.above(img.as_tensor() if hasattr(img, "as_tensor") else img).to(torch.uint8)
        return d


class _VoxelSpacingd(MapTransform):
    def __init__(self, key: str, spacing_key: str) -> None:
        super().__init__(key)
        self.spacing_key = spacing_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.spacing_key] = voxel_spacing(d[self.keys[0]])
        return d


class CLEFPreprocessd(Compose):
    """Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.CLEFPreprocess` (CLEF §2.1): body
    mask (> ``body_threshold`` HU) of the image, crop of every key to its bounding box, resize to ``spatial_size``,
    canonical orientation, then the image clipped to ``hu_window`` and scaled to (-1, 1). Label maps (the other
    keys) are resized with (centre-aligned) nearest neighbours. An invertible MONAI ``Compose``: ``Invertd(keys="pred",
    transform=<a Compose holding this>, orig_keys=image_key)`` brings a prediction back to the input's grid and
    orientation.

    Besides the keys it transforms it writes ``spacing_key``: the voxel size (mm) after cropping and resizing,
    ``(3,)`` float32 (also in the image MetaTensor's affine), which the discriminativeness loss measures distances
    with; and ``body_key``: the body mask ``(1, *spatial_size)`` uint8 on the output grid, where its anchors and
    leaves are drawn (None skips either). Errors name the file: no voxel above ``body_threshold`` HU, an image that
    is not one 3D volume (put ``ValidateCTd`` first for label checks).

    Args:
        keys: the image and its label maps (missing keys are skipped, e.g. no label at inference).
        image_key: the CT image among ``keys``.
        spatial_size: output shape (paper §2.1: 192^3).
        axcodes: canonical orientation.
        hu_window: clipping window (paper §2.1: (-200, 300) HU).
        body_threshold: body mask threshold (paper §2.1: -500 HU).
        image_mode: interpolation of the image's resize.
        body_key: where the body mask goes (None: not written).
        spacing_key: where the voxel size goes (None: not written).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        image_key: str = "image",
        spatial_size: Sequence[int] = (192, 192, 192),
        axcodes: str = "RAS",
        hu_window: Sequence[float] = (-200.0, 300.0),
        body_threshold: float = -500.0,
        image_mode: str = "trilinear",
        body_key: str | None = "body",
        spacing_key: str | None = "spacing_mm",
    ) -> None:
        keys = list(ensure_tuple(keys))
        if image_key not in keys:
            raise ValueError(f"CLEFPreprocessd: image_key {image_key!r} is not among keys {keys}.")
        # "nearest-exact": PyTorch's "nearest" rounds down, shifting label maps by up to a voxel per resize
        modes = [image_mode if k == image_key else "nearest-exact" for k in keys]
        size = tuple(int(s) for s in spatial_size)
        transforms: list = [
            _CheckCTd(image_key, body_threshold),
            CropForegroundd(
                keys,
                source_key=image_key,
                select_fn=AboveHU(body_threshold),
                allow_smaller=True,
                start_coord_key=None,
                end_coord_key=None,
                allow_missing_keys=True,
            ),
            Resized(keys, size, mode=modes, allow_missing_keys=True),
            Orientationd(keys, axcodes=axcodes, allow_missing_keys=True),
        ]
        if body_key:
            transforms.append(_BodyMaskd(image_key, body_key, body_threshold))
        transforms.append(
            ScaleIntensityRanged(image_key, float(hu_window[0]), float(hu_window[1]), -1.0, 1.0, clip=True)
        )
        if spacing_key:
            transforms.append(_VoxelSpacingd(image_key, spacing_key))
        super().__init__(transforms)


CLEFPreprocessD = CLEFPreprocessDict = CLEFPreprocessd


class RandCLEFAffined(RandomizableTransform, MapTransform):
    """Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.RandCLEFAffine`: draws CLEF's random
    affine ``T`` for the sample and writes its ``theta`` ``(n, n + 1)`` under ``theta_key``; the data are not
    warped here (the model warps image and features on the device, eq. 2). ``keys``: the image, whose dimensions
    give ``n``. Seed with ``set_random_state`` (MONAI's datasets / ``set_determinism`` do).

    Args:
        keys: the image key.
        theta_key: where ``theta`` goes (the network's ``theta`` argument via ``PrepareViewBatch(network_kwargs=
            {"theta": theta_key})``).
        scale_range, shift_range, rotate_range, num_axes: see ``RandCLEFAffine``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        theta_key: str = "clef_theta",
        scale_range: Sequence[float] = (1.0, 1.5),
        shift_range: Sequence[float] = (-0.1, 0.1),
        rotate_range: Sequence[float] = (-30.0, 30.0),
        num_axes: int = 2,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.theta_key = theta_key
        self.affine = RandCLEFAffine(scale_range, shift_range, rotate_range, num_axes)

    def set_random_state(self, seed: int | None = None, state=None) -> RandCLEFAffined:
        super().set_random_state(seed, state)
        self.affine.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        if key not in d:
            raise KeyError(f"RandCLEFAffined: the item has no {key!r} (keys: {sorted(map(str, d))}).")
        d[self.theta_key] = self.affine(d[key])
        return d


RandCLEFAffineD = RandCLEFAffineDict = RandCLEFAffined


class AsOrganLabelsd(MapTransform):
    """Dictionary version of :py:class:`~monai_contrastive.transforms.ct.array.AsOrganLabels` (CLEF §2.3)."""

    def __init__(
        self, keys: KeysCollection = "pred", threshold: float = 0.5, sigmoid: bool = False, allow_missing_keys=False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = AsOrganLabels(threshold, sigmoid)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


AsOrganLabelsD = AsOrganLabelsDict = AsOrganLabelsd
