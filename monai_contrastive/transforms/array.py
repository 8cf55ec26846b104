"""Array transforms: multi-view contrastive learning, loading X-rays whatever format they come in."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import LoadImage, Randomizable, Transform
from monai.utils import TransformBackends, optional_import

from monai_contrastive.data.formats import dicom_photometric_interpretation, is_dicom_file

__all__ = ["RandMultiView", "LoadXRay", "is_dicom_file", "dicom_photometric_interpretation"]


class RandMultiView(Randomizable, Transform):
    """Apply a random transform ``num_views`` times to one image and stack the results: ``(C, ...)`` -> ``(V, C, ...)``.

    This is batch augmentation (Hoffer et al., arXiv:1901.09335; AdaCon §IV-A uses 8 samples x 8 views): each call
    of the wrapped random transform draws afresh, so the views are independent augmentations of one sample.
    ``set_random_state`` is forwarded to the wrapped transform, so the whole pipeline is reproducible.

    Args:
        transform: a (random) transform on one image.
        num_views: V.
    """

    def __init__(self, transform: Callable, num_views: int = 2) -> None:
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}.")
        self.transform = transform
        self.num_views = int(num_views)

    def set_random_state(self, seed: int | None = None, state=None) -> RandMultiView:
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, img):
        views = [torch.as_tensor(self.transform(img)) for _ in range(self.num_views)]
        return torch.stack(views, dim=0)


def _itk_inverts_monochrome1() -> bool:
    # ITK's GDCMImageIO converts MONOCHROME1 to MONOCHROME2 on read since ITK 5.1 (InsightSoftwareConsortium/ITK#1370)
    itk, has_itk = optional_import("itk")
    if not has_itk:
        return False
    try:
        return (int(itk.Version.GetITKMajorVersion()), int(itk.Version.GetITKMinorVersion())) >= (5, 1)
    except Exception:  # pragma: no cover - an ITK without the version API is older than 5.1
        return False


class LoadXRay(Transform):
    """Load a single-frame 2D X-ray from any format a site exports it in, as a ``(1, H, W)`` float32 image.

    Accepted: DICOM (single frame; MONOCHROME1 or MONOCHROME2; any bit depth; RescaleSlope / RescaleIntercept
    applied), 8- and 16-bit PNG, JPEG, TIFF/BMP (anything PIL reads), and 2D NIfTI. Whatever the format, the output
    has one channel first and two spatial dimensions, in MONAI's spatial order (the same for every format, so a
    datalist may mix them):

    * DICOM is read through MONAI's ``ITKReader`` whether or not pydicom is installed (ITK/GDCM applies the modality
      rescale; a single-frame file comes back as ``(H, W, 1)``, whose trailing singleton is dropped). MONOCHROME1
      (bone dark, as on film) is shown as MONOCHROME2 (bone bright): ITK >= 5.1 inverts it on read, otherwise it is
      inverted here; the value is read with pydicom when installed, else from the ITK metadata (0028|0004).
    * colour images (RGB, RGBA, palette) become gray with the ITU-R BT.601 luma weights; an alpha channel is dropped.
    * with ``scale`` the intensities are min-max scaled to [0, 1] per image (exports of one film in 8 and 16 bits
      then give the same image).

    ``meta`` keeps the reader's metadata plus ``"photometric_interpretation"`` for DICOM.

    Args:
        scale: min-max scale each image to [0, 1].
        reader: reader for non-DICOM files, as ``monai.transforms.LoadImage`` takes it (default: MONAI's choice).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read (truncated, corrupt, unsupported), is not a single-frame 2D image, has
            non-finite values, or is constant with ``scale``. Every message starts with the file's path.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, scale: bool = True, reader: str | None = None) -> None:
        self.scale = scale
        self.loader = LoadImage(reader=reader, image_only=True)
        self.dicom_loader = LoadImage(reader="ITKReader", image_only=True)

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        path = os.fspath(filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"X-ray file not found: '{path}'.")
        dicom = is_dicom_file(path)
        try:
            img = (self.dicom_loader if dicom else self.loader)(path)
        except Exception as e:
            raise ValueError(f"'{path}': cannot read this X-ray ({type(e).__name__}: {e}).") from e
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        x = torch.as_tensor(img).float()
        channel_dim = meta.get("original_channel_dim", "no_channel")
        if isinstance(channel_dim, int) and x.ndim > 2:
            x = torch.movedim(x, channel_dim, 0)
        else:
            x = x[None]
        while x.ndim > 3 and x.shape[-1] == 1:  # DICOM / NIfTI single slice: (1, H, W, 1)
            x = x[..., 0]
        if x.ndim != 3:
            raise ValueError(
                f"'{path}': expected a single-frame 2D X-ray, got an image of shape {tuple(img.shape)} "
                "(a multi-frame DICOM or a 3D volume?)."
            )
        if x.shape[0] in (3, 4):  # RGB(A): BT.601 luma, alpha dropped
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).reshape(3, 1, 1)
            x = (x[:3] * weights).sum(0, keepdim=True)
        elif x.shape[0] == 2:  # gray + alpha
            x = x[:1]
        elif x.shape[0] != 1:
            raise ValueError(f"'{path}': expected a gray or RGB X-ray, got {x.shape[0]} channels.")
        if not torch.isfinite(x).all():
            raise ValueError(f"'{path}': the image has non-finite (NaN or infinite) values.")
        if dicom:
            photometric = dicom_photometric_interpretation(path, meta)
            meta["photometric_interpretation"] = photometric
            if photometric == "MONOCHROME1" and not _itk_inverts_monochrome1():
                x = x.max() + x.min() - x
        if self.scale:
            lo, hi = x.min(), x.max()
            if not hi > lo:
                raise ValueError(f"'{path}': the image is constant (every pixel {float(lo):g}): blank or corrupt.")
            x = (x - lo) / (hi - lo)
        affine = meta.pop("affine", None)
        meta["spatial_shape"] = np.asarray(x.shape[1:])
        meta["original_channel_dim"] = 0
        if affine is not None:
            affine = to_affine_nd(2, torch.as_tensor(affine, dtype=torch.float64))
        return MetaTensor(x.contiguous(), affine=affine, meta=meta)
