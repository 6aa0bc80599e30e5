"""Studies for trying the node: the simulator's T1 reference and degraded T2 target written as two
classic MR series of one study (what a scanner would send). Used by the tests, the benchmark and
anyone checking a node installation without patient data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _resize(stack: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, then nearest-neighbour onto ``size`` x ``size`` (a test pattern, not science)."""
    n, h, w = stack.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    idx = np.linspace(0, side - 1, size).round().astype(int)
    return stack[:, top + idx][:, :, left + idx]


def write_study(folder: str | Path, *, slices: int = 4, size: int = 64, seed: int = 0, patient: str = "SGF^Phantom",
                ref_description: str = "T1 SE", tar_description: str = "T2 TSE") -> tuple[Path, Path]:
    """Write ``folder/ref`` and ``folder/tar`` (one study, same grid, deterministic UIDs from
    ``seed``); returns the two series folders."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from ..data.simulator import simulate

    sim = simulate("t1-t2", "recon4x", "test", slices, seed=seed)
    scale = 1000.0 / max(float(sim["ground_truth"].max()), 1e-6)
    folder = Path(folder)
    key = f"sgf-deploy synthetic study {seed} {slices} {size}"
    study, frame = generate_uid(entropy_srcs=[key, "study"]), generate_uid(entropy_srcs=[key, "frame"])
    out = []
    for number, (name, images, desc) in enumerate((("ref", sim["reference"], ref_description),
                                                   ("tar", sim["target"], tar_description)), start=1):
        series = generate_uid(entropy_srcs=[key, name])
        pixels = np.clip(np.round(_resize(images, size) * scale), 0, 65535).astype("<u2")
        path = folder / name
        path.mkdir(parents=True, exist_ok=True)
        for i, sl in enumerate(pixels):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[key, name, str(i)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, f"SGF{seed:05d}", "", "O"
            ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", str(seed), ""
            ds.ReferringPhysicianName = ""
            ds.Modality, ds.Manufacturer, ds.PositionReferenceIndicator = "MR", "sgf-deploy simulator", ""
            ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription, ds.ProtocolName = number, i + 1, desc, desc
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.PatientPosition, ds.BodyPartExamined = "HFS", "HEAD"
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = ("500", "15", "1") if name == "ref" else ("4000", "100", "16")
            ds.MagneticFieldStrength, ds.ImagedNucleus = "3", "1H"
            ds.Rows, ds.Columns = sl.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelSpacing, ds.SliceThickness = ["1", "1"], "3"
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.ImagePositionPatient = ["-32", "-32", f"{3.0 * i:g}"]
            ds.SliceLocation = f"{3.0 * i:g}"
            ds.PixelData = sl.tobytes()
            ds.save_as(path / f"IM{i + 1:04d}.dcm", enforce_file_format=True)
        out.append(path)
    return out[0], out[1]
