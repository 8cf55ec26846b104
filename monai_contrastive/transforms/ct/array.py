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
Array transforms of the CT segmentation pipeline that MONAI lacks. The pipeline itself is MONAI's (``LoadImage``,
``EnsureChannelFirst``, ``Orientation``, ``Spacing``, ``ScaleIntensityRange``, ``CropForeground``, ...); what is
added here is :py:class:`ValidateCT`, which stops a bad case right after loading with an error that names its file,
instead of letting it fail obscurely (or silently train on garbage) after resampling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    Compose,
    CropForeground,
    LoadImage,
    Orientation,
    Randomizable,
    RandomizableTransform,
    Resize,
    ScaleIntensityRange,
    Transform,
)
from monai.utils import TransformBackends, convert_to_tensor, ensure_tuple

__all__ = [
    "AboveHU",
    "AsOrganLabels",
    "CLEFPreprocess",
    "FelzenszwalbSuperpixels",
    "LoadVolume",
    "OrganPatches",
    "PercentileNormalize",
    "RandCLEFAffine",
    "RandResizedCrop",
    "ValidateCT",
    "body_mask",
    "check_ct_volume",
    "ct_name",
    "voxel_spacing",
]


class LoadVolume(LoadImage):
    """MONAI's ``LoadImage`` that names the file when reading it fails.

    ``LoadImage`` names the file when no reader can open it, but nibabel reads a ``.nii.gz`` lazily: a truncated or
    corrupt archive fails later, in ``reader.get_data``, with ``EOFError: Compressed file ended before the end-of-stream
    marker was reached`` and no file name. This class re-raises any reading error as ``RuntimeError("cannot read
    <file>: <error>")`` chained to the original. Arguments and output are those of ``LoadImage``.
    """

    def __call__(self, filename, reader=None):
        try:
            return super().__call__(filename, reader)
        except Exception as e:
            names = [str(f) for f in ensure_tuple(filename)]
            name = names[0] if len(names) == 1 else names
            raise RuntimeError(f"{type(self).__name__}: cannot read {name}: {type(e).__name__}: {e}") from e


def ct_name(img: Any, meta: Mapping | None = None) -> str | None:
    """
    The source file of ``img``: ``filename_or_obj`` of its MetaTensor meta, else of ``meta`` (the
    ``<key>_meta_dict`` of ``LoadImaged(image_only=False)``), else ``img`` itself when it is still a path.
    ``None`` when none of these is known.
    """
    if isinstance(img, (str, bytes)) or hasattr(img, "__fspath__"):
        return str(img)
    for m in (getattr(img, "meta", None), meta):
        if isinstance(m, Mapping) and m.get("filename_or_obj"):
            return str(m["filename_or_obj"])
    return None


def _meta(img: Any, meta: Mapping | None) -> Mapping:
    m = getattr(img, "meta", None)
    if isinstance(m, Mapping) and m:
        return m
    return meta if isinstance(meta, Mapping) else {}


def _channel_dim(meta: Mapping) -> int | None:
    """``original_channel_dim`` of ``LoadImage``'s meta as an int; ``None`` for "no channel" (NaN / a string)."""
    ch = meta.get("original_channel_dim")
    if ch is None or isinstance(ch, str):
        return None
    try:
        ch = float(ch)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(ch) else int(ch)


def _affine(img: Any, meta: Mapping) -> np.ndarray | None:
    affine = getattr(img, "affine", None) if hasattr(img, "meta") else None
    if affine is None:
        affine = meta.get("affine")
    return None if affine is None else np.asarray(affine, dtype=np.float64)


def _plain(x: NdarrayOrTensor) -> torch.Tensor:
    """``x`` as a plain tensor (MetaTensor ops would track meta for nothing)."""
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)


def _fmt(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else repr(v)


class ValidateCT(Transform):
    """
    Check one CT case straight from ``LoadImage`` (before ``EnsureChannelFirst`` and any resampling) and pass the
    image through unchanged. Every error is a ``ValueError`` that names the file (``filename_or_obj`` of the
    MetaTensor meta, or of the ``meta`` dicts given).

    Checks:

    - the image (and the label) is a 3D volume. The array's spatial dimensions are those left after removing the
      channel dimension ``LoadImage`` reports as ``original_channel_dim``: a NIfTI stored as (H, W, D, 1) (NIfTI
      ``dim[0] = 4`` with one time point, which ``NibabelReader`` keeps as a channel) is accepted, since
      ``EnsureChannelFirst`` turns it into (1, H, W, D) like any 3D volume; so is a plain (H, W, D, 1) array without
      meta. Rejected: 2D images (one slice as (H, W), or an RGB picture), genuine 4D data (a time series or a
      multi-component image: more than one channel), and volumes with extra singleton dimensions that
      ``EnsureChannelFirst`` would not remove (NIfTI (H, W, D, 1, 1): load it with
      ``NibabelReader(squeeze_non_spatial_dims=True)``). A single-slice (H, W, 1) volume is 3D and accepted.
    - the image intensities are finite and at least one voxel is above ``min_max_hu`` HU: a volume whose maximum is
      at or below -500 HU is empty (all air) or not in Hounsfield units (e.g. already normalised to [0, 1]).
    - the label, when given, has the image's spatial shape and affine (``np.allclose``, ``atol`` in mm: the label
      must live on the image's grid, else every later spatial transform would misalign them) and only integer
      values in ``[0, num_classes)``; the offending values are named. ``num_classes=None`` only requires
      non-negative integers.

    An organ missing from a label map is not an error (the metrics report it as absent).

    Args:
        num_classes: number of label values including background 0 (14 for the 13 FLARE22 organs); ``None`` skips
            the upper bound.
        min_max_hu: the image must have a voxel above this value (HU); ``None`` skips the check.
        affine_atol: absolute tolerance (mm) of the image / label affine comparison.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, num_classes: int | None = None, min_max_hu: float | None = -500.0, affine_atol: float = 1e-3):
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}.")
        self.num_classes = num_classes
        self.min_max_hu = min_max_hu
        self.affine_atol = affine_atol

    def spatial_shape(self, img: NdarrayOrTensor, meta: Mapping | None = None, what: str = "image") -> tuple:
        """The 3D spatial shape of ``img`` as loaded by ``LoadImage``; raises ``ValueError`` for anything else."""
        m = _meta(img, meta)
        name = ct_name(img, meta) or "<no file name>"
        shape = tuple(int(s) for s in img.shape)
        ch = _channel_dim(m)
        after_ecf = " (apply ValidateCT to LoadImage's output, before EnsureChannelFirst)"
        if ch is not None and -len(shape) <= ch < len(shape):
            if shape[ch] != 1:
                hint = after_ecf if len(shape) == 4 and shape[0] == 1 else ""
                raise ValueError(
                    f"{what} {name}: shape {shape} has {shape[ch]} channels / time points along dim {ch}; a CT "
                    f"volume has one (genuine 4D and multi-component images are not supported){hint}."
                )
            spatial = shape[:ch] + shape[ch + 1 :] if ch != -1 else shape[:-1]
        elif len(shape) == 4 and shape[-1] == 1:
            spatial = shape[:3]
        else:
            spatial = shape
        if len(spatial) != 3:
            hint = ""
            if len(spatial) > 3 and all(s == 1 for s in spatial[3:]):
                hint = " (extra singleton dims: load it with NibabelReader(squeeze_non_spatial_dims=True))"
            elif len(spatial) == 4 and spatial[0] == 1:
                hint = after_ecf
            raise ValueError(
                f"{what} {name}: expected a 3D volume (H, W, D), got a {len(spatial)}D one, shape {shape}{hint}."
            )
        return spatial

    def __call__(
        self,
        img: NdarrayOrTensor,
        label: NdarrayOrTensor | None = None,
        img_meta: Mapping | None = None,
        label_meta: Mapping | None = None,
    ) -> NdarrayOrTensor:
        """
        Args:
            img: the CT volume as loaded, (H, W, D) or (H, W, D, 1), in HU.
            label: its integer label map, same shape, or ``None``.
            img_meta: meta dict of ``img`` when it is not a MetaTensor (``LoadImaged(image_only=False)``).
            label_meta: meta dict of ``label``, likewise.

        Returns:
            ``img``, unchanged.
        """
        name = ct_name(img, img_meta) or "<no file name>"
        shape = self.spatial_shape(img, img_meta, "image")
        self._check_intensities(img, name)
        if label is not None:
            self._check_label(img, label, img_meta, label_meta, shape, name)
        return img

    def _check_intensities(self, img: NdarrayOrTensor, name: str) -> None:
        x = _plain(img)
        if x.numel() == 0:
            raise ValueError(f"image {name}: the volume is empty (shape {tuple(x.shape)}).")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"image {name}: contains NaN or infinite intensities.")
        if self.min_max_hu is not None:
            top = float(x.max())
            if top <= self.min_max_hu:
                raise ValueError(
                    f"image {name}: no voxel above {self.min_max_hu} HU (maximum {top:g}): an empty volume, or not a "
                    "CT in Hounsfield units."
                )

    def _check_label(
        self,
        img: NdarrayOrTensor,
        label: NdarrayOrTensor,
        img_meta: Mapping | None,
        label_meta: Mapping | None,
        shape: tuple,
        name: str,
    ) -> None:
        label_name = ct_name(label, label_meta) or "<no file name>"
        label_shape = self.spatial_shape(label, label_meta, "label")
        if label_shape != shape:
            raise ValueError(
                f"label {label_name} has shape {label_shape} but its image {name} has {shape}; the label must be on "
                "the image's voxel grid."
            )
        a_img, a_lab = _affine(img, _meta(img, img_meta)), _affine(label, _meta(label, label_meta))
        if a_img is not None and a_lab is not None and not np.allclose(a_img, a_lab, atol=self.affine_atol):
            raise ValueError(
                f"label {label_name} and its image {name} have different affines (atol {self.affine_atol} mm); the "
                f"label must be on the image's voxel grid.\nimage affine:\n{np.round(a_img, 4)}\nlabel affine:\n"
                f"{np.round(a_lab, 4)}"
            )
        self._check_values(label, label_name)

    def _check_values(self, label: NdarrayOrTensor, label_name: str) -> None:
        y = _plain(label)
        if y.numel() == 0:
            raise ValueError(f"label {label_name}: the label map is empty (shape {tuple(y.shape)}).")
        lo, hi = y.min(), y.max()
        ok = bool(lo >= 0) and (self.num_classes is None or bool(hi < self.num_classes))
        if ok and y.is_floating_point():
            # a float label map (LoadImage's default dtype) must still hold integers: 0.5 is an interpolated label
            ok = not bool((y != torch.round(y)).any())
        if ok:
            return
        values = torch.unique(y).double().tolist()
        bad = [
            v
            for v in values
            if not (math.isfinite(v) and v == int(v) and v >= 0 and (self.num_classes is None or v < self.num_classes))
        ]
        bad = list(dict.fromkeys(_fmt(v) for v in bad))  # torch.unique keeps every NaN apart
        shown = ", ".join(bad[:10]) + (f", ... ({len(bad)} in all)" if len(bad) > 10 else "")
        allowed = f"[0, {self.num_classes})" if self.num_classes is not None else "non-negative integers"
        raise ValueError(f"label {label_name}: values {shown} outside the label values {allowed}.")


def body_mask(hu: np.ndarray, threshold: float = -500.0, slice_axis: int = -1) -> np.ndarray:
    """The body of a CT volume ``(H, W, D)`` in HU: the largest 3D connected component of ``hu >= threshold``, with
    the holes of each slice along ``slice_axis`` filled (air in bowel and lungs stays inside the body). Boolean, same
    shape; all False when no voxel reaches ``threshold``."""
    from scipy import ndimage

    above = np.asarray(hu) >= threshold
    labels, n = ndimage.label(above)
    if n == 0:
        return above
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    body = np.moveaxis(body, slice_axis, 0)
    filled = np.stack([ndimage.binary_fill_holes(s) for s in body])
    return np.moveaxis(filled, 0, slice_axis)


class FelzenszwalbSuperpixels(Transform):
    """Felzenszwalb superpixels of every axial slice inside the body: the local regions of Local Region Contrast
    (Naushad 2022, §3.1.2), from scikit-image's ``felzenszwalb`` (Felzenszwalb & Huttenlocher 2004).

    Input: a CT volume ``(1, H, W, D)`` (channel first) in HU on the training grid (after ``Orientation`` and
    resampling, before intensity windowing). Each slice along ``slice_axis`` is windowed to ``hu_window`` -> [0, 1],
    the voxels outside the body (:func:`body_mask`) are set to 0 so that no region crosses the body's edge, the
    slice is over-segmented and the regions outside the body get id 0. Ids are 1..K per slice (a slice's regions
    are numbered independently; the loss only compares regions of the same slice). Output: ``(1, H, W, D)`` int32,
    a MetaTensor with the image's affine when the input is one.

    Deterministic, so it belongs before the first random transform of a cached pipeline (``PersistentDataset``
    writes it once per volume and parameters).

    Args:
        scale: Felzenszwalb's ``scale`` (higher: larger regions), on the [0, 1] windowed slice.
        sigma: Gaussian pre-smoothing width (pixels).
        min_size: minimum region size (pixels); the main control of the number of regions (thesis Fig. 2.2).
        hu_window: HU range mapped to [0, 1] for the segmentation (default: an abdominal window, ours).
        body_threshold: HU of the body mask (-500: soft tissue and fat in, air out; as vox2vec's public code).
        slice_axis: spatial axis across slices (-1: the last, axial in RAS).

    Defaults: ``min_size=400``, ``sigma=1`` as in the public code of Ouyang et al.'s superpixel self-supervision
    (the thesis gives no values; Fig. 2.2 varies ``min_size``); ``scale=100`` on slices in [0, 1] is ours (no
    publication gives it). The body's largest connected component is also Ouyang et al.'s choice.
    """

    def __init__(
        self,
        scale: float = 100.0,
        sigma: float = 1.0,
        min_size: int = 400,
        hu_window: tuple[float, float] = (-175.0, 250.0),
        body_threshold: float = -500.0,
        slice_axis: int = -1,
    ) -> None:
        self.scale = float(scale)
        self.sigma = float(sigma)
        self.min_size = int(min_size)
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        if self.hu_window[1] <= self.hu_window[0]:
            raise ValueError(f"FelzenszwalbSuperpixels: hu_window must increase, got {hu_window}.")
        self.body_threshold = float(body_threshold)
        self.slice_axis = slice_axis

    def slice_regions(self, window: np.ndarray, body: np.ndarray) -> np.ndarray:
        """Regions (ids 1..K, 0 outside ``body``) of one windowed 2D slice."""
        from skimage.segmentation import felzenszwalb

        if not body.any():
            return np.zeros(window.shape, dtype=np.int32)
        seg = felzenszwalb(
            np.where(body, window, 0.0), scale=self.scale, sigma=self.sigma, min_size=self.min_size, channel_axis=None
        )
        seg = np.where(body, seg + 1, 0)
        _, inverse = np.unique(seg, return_inverse=True)  # consecutive ids, 0 stays 0 (the smallest value)
        out = inverse.reshape(seg.shape).astype(np.int32)
        return out if (seg == 0).any() else out + 1

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        arr = _plain(img).numpy()
        if arr.ndim != 4 or arr.shape[0] != 1:
            raise ValueError(
                f"FelzenszwalbSuperpixels: expected a channel-first 3D CT (1, H, W, D), got shape {tuple(arr.shape)}"
                f"{f' for {ct_name(img)!r}' if ct_name(img) else ''}."
            )
        vol = arr[0].astype(np.float32)
        body = body_mask(vol, self.body_threshold, self.slice_axis)
        lo, hi = self.hu_window
        window = np.clip((vol - lo) / (hi - lo), 0.0, 1.0)
        w_s, b_s = np.moveaxis(window, self.slice_axis, 0), np.moveaxis(body, self.slice_axis, 0)
        regions = np.stack([self.slice_regions(w, b) for w, b in zip(w_s, b_s)])
        regions = np.moveaxis(regions, 0, self.slice_axis)[None]
        out = torch.as_tensor(regions)
        if isinstance(img, torch.Tensor) and hasattr(img, "affine"):
            from monai.data import MetaTensor

            out = MetaTensor(out)
            out.copy_meta_from(img, copy_attr=True)
        return out


class PercentileNormalize(Transform):
    """DCC-CL §4.2 intensity preprocessing: a soft-tissue window, then min-max normalisation of each volume by its
    own 1st and 99th percentiles, ``(X - X_1) / (X_99 - X_1)``.

    The window clips HU to ``[window[0], window[1]]`` (-175 to 250 HU in the paper); the percentiles are those of the
    windowed volume; values beyond them are clipped to [0, 1] (ours: the contrast correlation of eq. 2 needs
    intensities in [0, 1] so that ``1 - |d_i - d_j|`` is a weight). A volume whose percentiles coincide (constant
    after windowing) maps to zeros.

    Args:
        window: the HU window.
        percentiles: the lower and upper percentile of the min-max normalisation.
        clip: clip the normalised intensities to [0, 1].

    Shapes: any; returns float32 of the same shape (MetaTensor metadata kept).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, window: Sequence[float] = (-175.0, 250.0), percentiles: Sequence[float] = (1.0, 99.0), clip: bool = True
    ) -> None:
        if len(window) != 2 or window[0] >= window[1]:
            raise ValueError(f"PercentileNormalize: window must be (low, high) with low < high, got {window}.")
        if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(f"PercentileNormalize: percentiles must be 0 <= low < high <= 100, got {percentiles}.")
        self.window = (float(window[0]), float(window[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.clip = clip

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=get_track_meta())
        x = x.clamp(self.window[0], self.window[1])
        flat = x.as_tensor().reshape(-1) if hasattr(x, "as_tensor") else x.reshape(-1)
        # torch.quantile is limited to 2**24 elements; a whole CT volume exceeds it, so take the k-th values instead
        lo, hi = (_percentile(flat, p) for p in self.percentiles)
        if hi <= lo:
            return x * 0.0
        x = (x - lo) / (hi - lo)
        return x.clamp(0.0, 1.0) if self.clip else x


def _percentile(flat: torch.Tensor, q: float) -> float:
    """Linear-interpolated ``q``-th percentile (numpy's default) of a 1D tensor of any length."""
    n = flat.numel()
    pos = (n - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo = float(flat.kthvalue(lo + 1).values)
    v_hi = float(flat.kthvalue(hi + 1).values) if hi != lo else v_lo
    return v_lo + (v_hi - v_lo) * (pos - lo)


class OrganPatches(Randomizable, Transform):
    """DCC-CL §3.1 organ patches: for each organ class of a coarse mask, 2D axial patches centred on random voxels of
    that organ, each with the organ's binary attention map (and, when a label is given, its binary ground truth).

    Centres are drawn with MONAI's label-class crop sampling (``RandCropByLabelClasses`` with all the ratio on one
    class, i.e. a uniformly random voxel of that organ in the coarse mask); the patch is the ``(patch, patch, 1)``
    crop around it on the axial slice, zero-padded at the border, the slice axis dropped. Organs absent from the
    coarse mask get no patch.

    Args:
        num_classes: label values including background (organ classes are ``1 .. num_classes - 1``).
        patch_size: in-plane patch size (128 in the paper).
        num_samples: patches per organ per call.
        organs: organ classes to sample (default: every organ).

    ``__call__(image, coarse, label=None)`` with ``(1, H, W, D)`` arrays (RAS, last axis axial) returns a list of
    ``(organ, image_patch (1, P, P), attention (1, P, P), label_patch (1, P, P) or None)``.
    """

    def __init__(
        self,
        num_classes: int,
        patch_size: int | Sequence[int] = 128,
        num_samples: int = 1,
        organs: Sequence[int] | None = None,
    ) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"OrganPatches: num_classes must be >= 2 (background and an organ), got {num_classes}.")
        if int(num_samples) < 1:
            raise ValueError(f"OrganPatches: num_samples must be >= 1, got {num_samples}.")
        self.num_classes = int(num_classes)
        size = ensure_tuple(patch_size)
        self.patch_size = (int(size[0]), int(size[-1]))
        self.num_samples = int(num_samples)
        self.organs = list(organs) if organs is not None else list(range(1, self.num_classes))
        bad = [o for o in self.organs if not 1 <= int(o) < self.num_classes]
        if bad:
            raise ValueError(f"OrganPatches: organ classes {bad} outside 1..{self.num_classes - 1}.")

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> OrganPatches:
        super().set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(
        self, image: NdarrayOrTensor, coarse: NdarrayOrTensor, label: NdarrayOrTensor | None = None
    ) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        from monai.transforms import RandCropByLabelClasses, SpatialPad

        img = _plain(image).float()
        mask = _plain(coarse)
        if img.ndim != 4 or mask.shape[1:] != img.shape[1:]:
            raise ValueError(
                f"OrganPatches: image and coarse mask must be (1, H, W, D) on one grid, got {tuple(img.shape)} and "
                f"{tuple(mask.shape)}."
            )
        gt = _plain(label) if label is not None else None
        if gt is not None and gt.shape[1:] != img.shape[1:]:
            raise ValueError(f"OrganPatches: label {tuple(gt.shape)} and image {tuple(img.shape)} differ in shape.")
        roi = (*self.patch_size, 1)
        pad = SpatialPad((*self.patch_size, -1), method="symmetric")
        out = []
        mask_int = mask.round().long()
        for organ in self.organs:
            ratios = [0.0] * self.num_classes
            ratios[organ] = 1.0
            if not bool((mask_int == organ).any()):
                continue
            cropper = RandCropByLabelClasses(
                spatial_size=roi, ratios=ratios, num_classes=self.num_classes, num_samples=self.num_samples, warn=False
            )
            cropper.set_random_state(state=self.R)
            cropper.randomize(label=mask_int)
            for c in cropper.centers:
                sl = tuple(
                    slice(int(ci) - r // 2, int(ci) - r // 2 + r) if r > 1 else slice(int(ci), int(ci) + 1)
                    for ci, r in zip(c, roi)
                )
                parts = [img, (mask_int == organ).float()] + (
                    [(gt.round().long() == organ).float()] if gt is not None else []
                )
                crops = [_crop_padded(p, sl)[..., 0] for p in parts]
                crops = [pad(x) if x.shape[1:] != self.patch_size else x for x in crops]
                out.append((organ, crops[0], crops[1], crops[2] if gt is not None else None))
        return out


def _crop_padded(x: torch.Tensor, sl: tuple[slice, ...]) -> torch.Tensor:
    """``x[:, sl]`` where ``sl`` may reach outside ``x``: the outside is zero (patches at the image border)."""
    shape = x.shape[1:]
    out = torch.zeros((x.shape[0], *[s.stop - s.start for s in sl]), dtype=x.dtype)
    src, dst = [], []
    for s, n in zip(sl, shape):
        a, b = max(s.start, 0), min(s.stop, n)
        src.append(slice(a, b))
        dst.append(slice(a - s.start, b - s.start))
    out[(slice(None), *dst)] = x[(slice(None), *src)]
    return out


class RandResizedCrop(RandomizableTransform):
    """A random crop of a random area fraction and aspect ratio, resized back to the input size (torchvision's
    ``RandomResizedCrop``; the DCC-CL views use area scale 0.3-0.7, §3.1 and the authors' code).

    ``randomize(spatial)`` draws the crop box; ``__call__(img, mode)`` applies the drawn box to one ``(C, H, W)``
    image, so several images (a patch and its attention map) share one draw with their own interpolation modes.

    Args:
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        prob: probability of cropping (otherwise the image is returned unchanged).
    """

    def __init__(
        self, scale: Sequence[float] = (0.3, 0.7), ratio: Sequence[float] = (3 / 4, 4 / 3), prob: float = 1.0
    ) -> None:
        super().__init__(prob)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"RandResizedCrop: scale must satisfy 0 < low <= high <= 1, got {scale}.")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.box: tuple[int, int, int, int] | None = None

    def randomize(self, spatial: Sequence[int]) -> None:  # type: ignore[override]
        super().randomize(None)
        h, w = int(spatial[0]), int(spatial[1])
        self.box = (0, 0, h, w)
        if not self._do_transform:
            return
        area = h * w
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):  # torchvision's rejection sampling, then a centre crop fallback
            target = area * self.R.uniform(*self.scale)
            aspect = math.exp(self.R.uniform(*log_r))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(self.R.randint(0, h - ch + 1))
                left = int(self.R.randint(0, w - cw + 1))
                self.box = (top, left, ch, cw)
                return
        side = int(round(math.sqrt(area * self.scale[1])))
        ch, cw = min(side, h), min(side, w)
        self.box = ((h - ch) // 2, (w - cw) // 2, ch, cw)

    def __call__(self, img: NdarrayOrTensor, mode: str = "bilinear", randomize: bool = True) -> torch.Tensor:
        x = _plain(img).float()
        if randomize:
            self.randomize(x.shape[1:])
        if self.box is None:
            raise RuntimeError("RandResizedCrop: call randomize first.")
        top, left, ch, cw = self.box
        crop = x[:, top : top + ch, left : left + cw]
        if crop.shape[1:] == x.shape[1:]:
            return crop.clone()
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return torch.nn.functional.interpolate(crop[None], size=tuple(x.shape[1:]), mode=mode, **kwargs)[0]


class AboveHU:
    """``select_fn`` of MONAI's ``CropForeground``: voxels above ``threshold`` HU (a class, not a lambda, so that
    transforms holding it pickle for DataLoader workers and persistent caches)."""

    def __init__(self, threshold: float = -500.0) -> None:
        self.threshold = float(threshold)

    def __call__(self, x: NdarrayOrTensor) -> NdarrayOrTensor:
        return x > self.threshold

    def __repr__(self) -> str:
        return f"AboveHU({self.threshold:g})"


def check_ct_volume(img: NdarrayOrTensor, body_threshold: float | None = -500.0, meta: Mapping | None = None) -> None:
    """Raise a ``ValueError`` naming the file unless ``img`` is one channel-first 3D CT volume ``(1, H, W, D)`` with a
    voxel above ``body_threshold`` HU (the body of CLEF's preprocessing, §2.1 step 1)."""
    name = ct_name(img, meta)
    where = f" {name}" if name else ""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(
            f"image{where}: expected one channel-first 3D CT volume (1, H, W, D), got shape {shape} (a 2D slice, a 4D "
            "series or a multi-channel image cannot be preprocessed as a CT volume)."
        )
    if body_threshold is not None:
        x = _plain(img)
        if not bool((x > body_threshold).any()):
            raise ValueError(
                f"image{where}: no voxel above {body_threshold:g} HU (maximum {float(x.max()):g}), so there is no body "
                "to crop to: an empty volume, or not a CT in Hounsfield units."
            )


def voxel_spacing(img: NdarrayOrTensor) -> torch.Tensor:
    """The voxel size (mm) along each array axis of a MetaTensor: the column norms of its affine, ``(n,)`` float32."""
    affine = getattr(img, "affine", None)
    if affine is None:
        raise ValueError("voxel_spacing needs a MetaTensor with an affine (load the image with LoadImage(d)).")
    a = torch.as_tensor(affine, dtype=torch.float64)
    n = a.shape[0] - 1
    return torch.linalg.norm(a[:n, :n], dim=0).to(torch.float32)


class _CheckCT(Transform):
    def __init__(self, body_threshold: float | None) -> None:
        self.body_threshold = body_threshold

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        check_ct_volume(img, self.body_threshold)
        return img


class CLEFPreprocess(Compose):
    """The preprocessing of CLEF (Kuleshov et al., FLARE 2022, §2.1) of one channel-first CT volume in HU, in the
    paper's order, as an invertible MONAI ``Compose`` (``Invertd`` / ``.inverse`` undo every spatial step):

    1. body mask: voxels above ``body_threshold`` (-500 HU); a volume without one is an error naming the file;
    2. crop to the mask's bounding box (``CropForeground``);
    3. resize to ``spatial_size`` (192^3 in the paper) by interpolation (``Resize``);
    4. canonical orientation (``Orientation``, RAS by default);
    5. clip to ``hu_window`` (-200, 300) HU and 6. scale to (-1, 1) (``ScaleIntensityRange``).

    The voxel spacing after cropping and resizing is in the output MetaTensor's affine
    (:func:`voxel_spacing` reads it). Input ``(1, H, W, D)``, a 2D or 4D array is an error naming the file.

    Args:
        spatial_size: output shape (paper §2.1: 192 x 192 x 192).
        axcodes: canonical orientation.
        hu_window: clipping window in HU (paper §2.1: (-200, 300)).
        body_threshold: HU of the body mask (paper §2.1: -500).
        mode: interpolation of the resize (``"trilinear"``; ``"nearest"`` for label maps).
    """

    def __init__(
        self,
        spatial_size: Sequence[int] = (192, 192, 192),
        axcodes: str = "RAS",
        hu_window: Sequence[float] = (-200.0, 300.0),
        body_threshold: float = -500.0,
        mode: str = "trilinear",
    ) -> None:
        super().__init__(
            [
                _CheckCT(body_threshold),
                CropForeground(select_fn=AboveHU(body_threshold), allow_smaller=True),
                Resize(tuple(int(s) for s in spatial_size), mode=mode),
                Orientation(axcodes=axcodes),
                ScaleIntensityRange(float(hu_window[0]), float(hu_window[1]), -1.0, 1.0, clip=True),
            ]
        )


class RandCLEFAffine(RandomizableTransform):
    """The random affine ``T`` of CLEF's equivariance loss (eq. 2; §3.2 "Training protocols"): two of the three axes
    drawn at random, and in their plane a scale in ``scale_range`` (1, 1.5), a shift in ``shift_range`` (-0.1, 0.1)
    along each of the two axes and a rotation in ``rotate_range`` (-30, 30) degrees.

    Returns the matrix ``theta`` ``(n, n + 1)`` of :func:`~monai_contrastive.networks.affine_warp` (PyTorch's
    ``affine_grid`` convention: output -> input coordinates, the volume spans [-1, 1] per axis, coordinate ``c`` is
    array axis ``n - 1 - c``). The paper does not give the conventions; ours: the scale magnifies the content (the
    grid shrinks by ``1 / scale``), so the warped view stays inside the volume except at the corners the rotation
    and shift uncover; the shift is in those normalised units (0.1 = 5 % of the extent). Seed it with
    ``set_random_state``; ``prob`` is 1 (every sample gets a transform).

    Args:
        scale_range: magnification range.
        shift_range: shift range per selected axis (normalised units).
        rotate_range: rotation range in degrees within the selected plane.
        num_axes: axes of the plane (2).
    """

    def __init__(
        self,
        scale_range: Sequence[float] = (1.0, 1.5),
        shift_range: Sequence[float] = (-0.1, 0.1),
        rotate_range: Sequence[float] = (-30.0, 30.0),
        num_axes: int = 2,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.shift_range = (float(shift_range[0]), float(shift_range[1]))
        self.rotate_range = (float(rotate_range[0]), float(rotate_range[1]))
        if num_axes != 2:
            raise ValueError(f"RandCLEFAffine: the transform acts in a plane of 2 axes, got num_axes={num_axes}.")
        if self.scale_range[0] <= 0:
            raise ValueError(f"RandCLEFAffine: scales must be positive, got {scale_range}.")
        self.num_axes = num_axes
        self._params: tuple = ()

    def randomize(self, spatial_dims: int = 3) -> None:  # type: ignore[override]
        super().randomize(None)
        axes = np.sort(self.R.choice(spatial_dims, self.num_axes, replace=False))
        scale = self.R.uniform(*self.scale_range)
        shift = self.R.uniform(*self.shift_range, size=self.num_axes)
        angle = math.radians(self.R.uniform(*self.rotate_range))
        self._params = (spatial_dims, tuple(int(a) for a in axes), float(scale), tuple(float(s) for s in shift), angle)

    def matrix(self) -> torch.Tensor:
        """``theta`` of the last draw."""
        n, axes, scale, shift, angle = self._params
        theta = torch.zeros(n, n + 1, dtype=torch.float64)
        theta[:, :n] = torch.eye(n, dtype=torch.float64)
        p, q = (n - 1 - a for a in axes)  # affine_grid's coordinate of each array axis
        c, s = math.cos(angle) / scale, math.sin(angle) / scale
        theta[p, p], theta[p, q], theta[q, p], theta[q, q] = c, -s, s, c
        theta[p, n], theta[q, n] = shift
        return theta.to(torch.float32)

    def __call__(
        self, img: NdarrayOrTensor | None = None, spatial_dims: int | None = None, randomize: bool = True
    ) -> torch.Tensor:
        """Draw (unless ``randomize`` is False) and return ``theta`` for ``img`` (C, *spatial) or ``spatial_dims``."""
        n = int(spatial_dims) if spatial_dims is not None else (img.ndim - 1 if img is not None else 3)
        if randomize or not self._params or self._params[0] != n:
            self.randomize(n)
        return self.matrix()


class AsOrganLabels(Transform):
    """CLEF's post-processing (§2.3): per-organ probabilities ``(C, *spatial)`` (one channel per organ, no background)
    -> label map ``(1, *spatial)`` uint8: 0 (background) where every channel is below ``threshold``, else the organ
    ``1 + argmax``. MetaTensor meta is kept.

    Args:
        threshold: 0.5 (§2.3).
        sigmoid: apply the sigmoid first (False when ``Activations(sigmoid=True)`` ran before, e.g. ahead of
            ``Invertd``, whose zero padding must read as probability 0, not as the logit 0).
    """

    def __init__(self, threshold: float = 0.5, sigmoid: bool = False) -> None:
        self.threshold = float(threshold)
        self.sigmoid = sigmoid

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = _plain(img).float()
        if self.sigmoid:
            x = torch.sigmoid(x)
        top, idx = x.max(0, keepdim=True)
        labels = torch.where(top >= self.threshold, idx + 1, torch.zeros_like(idx)).to(torch.uint8)
        if isinstance(img, torch.Tensor) and hasattr(img, "affine"):
            from monai.data import MetaTensor

            out = MetaTensor(labels)
            out.copy_meta_from(img, copy_attr=True)
            return out
        return labels
