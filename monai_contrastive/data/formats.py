"""File formats: what a file is, read from its name, its first bytes or its header (never the pixel data)."""

from __future__ import annotations

from collections.abc import Mapping

from monai.utils import optional_import

__all__ = ["is_dicom_file", "dicom_photometric_interpretation"]

_NON_DICOM_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".npy", ".nrrd", ".mha")


def is_dicom_file(path: str) -> bool:
    """Whether ``path`` is a DICOM file: a ``.dcm``/``.dicom`` suffix, or the ``DICM`` magic at byte 128 (DICOM files
    from a PACS export often have no suffix at all)."""
    if str(path).lower().endswith((".dcm", ".dicom")):
        return True
    if str(path).lower().endswith(_NON_DICOM_SUFFIXES):
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_photometric_interpretation(path: str, meta: Mapping | None = None) -> str | None:
    """The Photometric Interpretation (0028,0004) of a DICOM file, e.g. ``"MONOCHROME1"``; None when absent.

    Read with pydicom when it is installed (header only), else from the ITK metadata dictionary that MONAI's
    ``ITKReader`` puts in ``meta`` (key ``"0028|0004"``).
    """
    pydicom, has_pydicom = optional_import("pydicom")
    if has_pydicom:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PhotometricInterpretation"])
            value = ds.get("PhotometricInterpretation")
        except Exception:  # not readable by pydicom: fall back to what ITK read
            value = None
        if value:
            return str(value).strip().upper()
    value = (meta or {}).get("0028|0004")
    return str(value).strip().upper() if value else None
