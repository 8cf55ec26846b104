"""LoadXRay(d): one film written in every format a site exports X-rays in reads back as the same (1, H, W) image."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, Resized
from PIL import Image

from monai_contrastive.transforms import LoadXRay, LoadXRayd, dicom_photometric_interpretation, is_dicom_file

H, W = 40, 56


def _film() -> np.ndarray:
    """A 12-bit film (rows, columns): a bright 'bone' band on a darker, smoothly varying background."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = 600 + 20 * xx + 10 * yy
    img[10:25, 15:40] += 1800
    return img.astype(np.uint16)


def write_dicom(path, stored: np.ndarray, photometric="MONOCHROME2", bits=12, slope=None, intercept=None) -> None:
    """A single-frame DX DICOM as modalities write it (pydicom, explicit VR little endian)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.uid import DigitalXRayImageStorageForPresentation

    from ..helpers import new_dicom_dataset

    ds = new_dicom_dataset(DigitalXRayImageStorageForPresentation)
    ds.Modality, ds.PatientID = "DX", "P0001"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype(np.uint16).tobytes()
    assert pydicom  # written with pydicom, read by the code under test through ITK
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """The same film as 12-bit MONOCHROME2 / MONOCHROME1 / rescaled 16-bit DICOM (one without a suffix), 8- and
    16-bit PNG, RGB PNG, JPEG and NIfTI; with the expected [0, 1] image of each."""
    pytest.importorskip("pydicom")
    d = tmp_path_factory.mktemp("xray")
    film = _film()
    scaled = (film - film.min()) / (film.max() - film.min())
    files = {}
    write_dicom(d / "mono2.dcm", film)
    files["mono2.dcm"] = scaled
    write_dicom(d / "mono1.dcm", 4095 - film, "MONOCHROME1")  # film convention: bone dark in the stored values
    files["mono1.dcm"] = scaled
    write_dicom(d / "rescaled16.dcm", film * 16, bits=16, slope="0.25", intercept="-1024")
    files["rescaled16.dcm"] = scaled
    write_dicom(d / "IM000001", film)  # PACS exports often have no suffix
    files["IM000001"] = scaled
    png16 = (film.astype(np.float64) - film.min()) / (film.max() - film.min()) * 65535
    Image.fromarray(png16.round().astype(np.uint16)).save(d / "film16.png")
    files["film16.png"] = scaled
    png8 = (scaled * 255).round().astype(np.uint8)
    Image.fromarray(png8).save(d / "film8.png")
    files["film8.png"] = png8 / 255.0
    Image.fromarray(np.stack([png8] * 3, -1)).save(d / "rgb.png")
    files["rgb.png"] = png8 / 255.0
    Image.fromarray(png8).save(d / "film.jpg", quality=98)
    files["film.jpg"] = png8 / 255.0
    nib.save(nib.Nifti1Image(film.T.astype(np.float32), np.eye(4)), str(d / "film.nii.gz"))  # NIfTI: (x, y)
    files["film.nii.gz"] = scaled
    return d, files


def _expected(arr: np.ndarray) -> torch.Tensor:
    # MONAI's spatial order: (x = column, y = row), the same for every reader
    return torch.as_tensor(arr.T[None], dtype=torch.float32)


def test_every_format_reads_as_the_same_image(films):
    d, files = films
    loader = LoadXRay()
    for name, expected in files.items():
        img = loader(str(d / name))
        assert img.shape == (1, W, H), name
        assert img.dtype == torch.float32 and float(img.min()) == 0.0 and float(img.max()) == 1.0, name
        atol = 0.03 if name.endswith(".jpg") else 1e-3
        torch.testing.assert_close(img.as_tensor(), _expected(expected), atol=atol, rtol=0, msg=name)
    assert dicom_photometric_interpretation(str(d / "mono1.dcm")) == "MONOCHROME1"
    assert is_dicom_file(str(d / "IM000001")) and not is_dicom_file(str(d / "film8.png"))


def test_dicom_without_pydicom(films, monkeypatch):
    """Reading needs no pydicom: the photometric interpretation comes from ITK's metadata (0028|0004)."""
    d, files = films
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    loader = LoadXRay()
    for name in ("mono1.dcm", "mono2.dcm", "rescaled16.dcm", "IM000001"):
        img = loader(str(d / name))
        torch.testing.assert_close(img.as_tensor(), _expected(files[name]), atol=1e-3, rtol=0, msg=name)
    assert loader(str(d / "mono1.dcm")).meta["photometric_interpretation"] == "MONOCHROME1"


def test_mixed_datalist_through_resize(films):
    """One pipeline over a datalist mixing DICOM, PNG, JPEG and NIfTI (the BMD bundle's load_preprocessing)."""
    d, files = films
    pipeline = Compose([LoadXRayd("image"), Resized("image", spatial_size=(32, 32), mode="area")])
    out = [pipeline({"image": str(d / name), "label": 0.7}) for name in files]
    assert all(o["image"].shape == (1, 32, 32) for o in out)
    ref = out[0]["image"].as_tensor()
    for o, name in zip(out, files):
        torch.testing.assert_close(o["image"].as_tensor(), ref, atol=0.03, rtol=0, msg=name)


def test_bad_files_are_named(films, tmp_path):
    d, _ = films
    loader = LoadXRay()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((d / "film16.png").read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.png"):
        loader(str(truncated))
    with pytest.raises(FileNotFoundError, match="nothere.dcm"):
        loader(str(tmp_path / "nothere.dcm"))
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 200)
    with pytest.raises(ValueError, match="garbage.dcm"):
        loader(str(garbage))
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 3)).astype(np.float32), np.eye(4)),
        str(tmp_path / "v.nii"),
    )
    with pytest.raises(ValueError, match="v.nii.*single-frame 2D"):
        loader(str(tmp_path / "v.nii"))
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(ValueError, match="blank.png.*constant"):
        loader(str(tmp_path / "blank.png"))
    with pytest.raises(ValueError, match="truncated.png"):
        LoadXRayd("image")({"image": str(truncated)})
