"""Small modules shared by the tests."""

from __future__ import annotations

import os

import torch


class TinyBackbone(torch.nn.Module):
    """A classification backbone in miniature: conv features, global pooling, a classifier ``fc`` to remove."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def new_dicom_dataset(sop_class_uid: str):
    """An empty pydicom ``Dataset`` of ``sop_class_uid`` with its file meta (explicit VR little endian) and a new
    SOP Instance UID, as modalities write them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    return ds


def write_ct_dicom_series(volume: str, folder: str, intercept: int = -1024, bits_stored: int = 12) -> list[str]:
    """Write the CT volume ``volume`` (NIfTI, HU) as a DICOM CT series in ``folder``, one file per slice, as scanners
    export it: unsigned 12-bit stored values with RescaleIntercept, LPS ImagePositionPatient / ImageOrientationPatient
    per slice, PixelSpacing (row, column), one Study/Series/FrameOfReference UID. Returns the file paths."""
    import itk
    import numpy as np
    import pydicom
    from pydicom.uid import CTImageStorage, generate_uid

    img = itk.imread(volume, itk.SS)
    arr = itk.array_from_image(img)  # (z, y, x)
    spacing, origin = np.asarray(itk.spacing(img)), np.asarray(itk.origin(img))
    direction = np.asarray(img.GetDirection())
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(arr.shape[0]):
        ds = new_dicom_dataset(CTImageStorage)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Synthetic^CT", "SYN001"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + k * spacing[2] * direction[:, 2]]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in [*direction[:, 0], *direction[:, 1]]]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        ds.RescaleIntercept, ds.RescaleSlope = str(intercept), "1"
        stored = arr[k].astype(np.int32) - intercept
        if stored.min() < 0 or stored.max() >= 2**bits_stored:
            raise ValueError(f"HU range {arr[k].min()}..{arr[k].max()} does not fit {bits_stored} bits at {intercept}")
        ds.PixelData = stored.astype(np.uint16).tobytes()
        path = os.path.join(folder, f"IM{k + 1:04d}")  # PACS exports often have no suffix: found by the DICM marker
        os.makedirs(folder, exist_ok=True)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
