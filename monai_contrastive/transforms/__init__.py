from .array import LoadXRay, RandMultiView, dicom_photometric_interpretation, is_dicom_file
from .dictionary import LoadXRayd, LoadXRayD, LoadXRayDict, RandMultiViewd, RandMultiViewD, RandMultiViewDict

__all__ = [
    "LoadXRay",
    "LoadXRayd",
    "LoadXRayD",
    "LoadXRayDict",
    "RandMultiView",
    "RandMultiViewd",
    "RandMultiViewD",
    "RandMultiViewDict",
    "dicom_photometric_interpretation",
    "is_dicom_file",
]
