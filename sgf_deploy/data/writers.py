"""Write a reconstruction back in the form the user brought the target in (no torch).

:func:`write_volume` writes float32 magnitude images as .npy, NIfTI (the input's header and
affine; data type float32, scaling reset), HDF5 (a fastMRI-style ``reconstruction`` dataset with
the input's attributes) or a new DICOM series (new UIDs, the input's geometry, classic
single-frame files -- also when the input was an Enhanced multi-frame object, because every
viewer and PACS reads those). Every output is written atomically (a temporary file or folder
beside the target, renamed into place) and an existing output is refused unless
``overwrite=True``. An input is never written over.
"""

from __future__ import annotations

import copy
import datetime as _dt
import gzip
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_path, temp_beside
from ..errors import InputError, OutputExistsError
from .volume import Volume

#: Appended to the SeriesDescription of a written DICOM series.
DICOM_SERIES_SUFFIX = " SGF-MRI"
#: Added to the SeriesNumber of a written DICOM series.
DICOM_SERIES_NUMBER_OFFSET = 1000

_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_CLASSIC_SOP_CLASSES = {
    _MR_IMAGE_STORAGE,
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
}
#: Elements of the input that would be wrong for the new pixel data.
_DICOM_DROP = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "NumberOfFrames",
    "LargestImagePixelValue", "SmallestImagePixelValue", "LargestPixelValueInSeries",
    "SmallestPixelValueInSeries", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction",
    "VOILUTSequence", "ModalityLUTSequence", "RescaleType", "IconImageSequence",
    "PlanarConfiguration", "LossyImageCompression", "LossyImageCompressionRatio",
    "LossyImageCompressionMethod", "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor", "BluePaletteColorLookupTableDescriptor",
    "PixelAspectRatio", "SOPInstanceUID", "SeriesInstanceUID", "ReferencedImageSequence",
)


def default_output_path(target_path: str | Path) -> Path:
    """``<target>_sgf.<ext>`` beside the target.

    ``t2_us.npy -> t2_us_sgf.npy``, ``scan.nii.gz -> scan_sgf.nii.gz``, ``x.h5 -> x_sgf.h5``,
    a DICOM folder ``T2/ -> T2_sgf/``; a single ``x.dcm`` gives the folder ``x_sgf`` because
    DICOM output is always a series folder.
    """
    p = Path(target_path)
    if p.name in ("", ".", ".."):
        p = p.resolve()
    name = p.name
    low = name.lower()
    if p.is_dir():
        return p.with_name(name + "_sgf")
    if low.endswith(".nii.gz"):
        return p.with_name(name[:-7] + "_sgf" + name[-7:])
    if low.endswith((".dcm", ".ima")):
        return p.with_name(name[:-4] + "_sgf")
    if p.suffix:
        return p.with_name(p.stem + "_sgf" + p.suffix)
    return p.with_name(name + "_sgf")


def _output_format(out: Path, like: Volume) -> str:
    low = out.name.lower()
    if low.endswith(".npy"):
        return "npy"
    if low.endswith((".nii", ".nii.gz")):
        return "nifti"
    if low.endswith((".h5", ".hdf5")):
        return "hdf5"
    if low.endswith((".dcm", ".ima")):
        raise InputError(f"output {out}: DICOM output is a series folder; give a folder path (e.g. {out.with_suffix('')})")
    if like.fmt == "dicom":
        return "dicom"
    raise InputError(f"output {out}: unknown output format; use .npy, .nii, .nii.gz, .h5/.hdf5, "
                     f"or a folder name for DICOM (DICOM needs a DICOM input)")


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_output_data(data: Any, like: Volume, out: Path) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"output {out}: data to write has dtype {arr.dtype}; expected real numbers")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"output {out}: data to write has shape {arr.shape}; expected (N, H, W) or (H, W)")
    if arr.shape != like.data.shape:
        raise InputError(
            f"output {out}: data to write is {'x'.join(map(str, arr.shape))} but the grid of "
            f"{like.source} is {like.shape_str()}"
        )
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    n_bad = int(np.count_nonzero(~np.isfinite(arr)))
    if n_bad:
        raise InputError(f"output {out}: data to write contains {n_bad} non-finite values (NaN/Inf); refusing to write it")
    return arr


def write_volume(
    path: str | Path,
    data: np.ndarray,
    like: Volume,
    *,
    overwrite: bool = False,
    description: str = "SGF-MRI reconstruction",
) -> Path:
    """Write ``data`` ((N, H, W) or (H, W) on ``like``'s grid) in ``like``'s form; return the path.

    The format follows the output suffix (.npy, .nii, .nii.gz, .h5/.hdf5); any other name is a
    DICOM series folder, which needs a DICOM ``like`` (its patient, study and geometry tags are
    copied). Geometry comes from ``like``: a NIfTI output of a non-NIfTI input uses
    ``like.orientation`` (DICOM) or a diagonal affine from ``like.spacing`` (identity if unknown).
    Raises :class:`OutputExistsError` for an existing output without ``overwrite`` and, always,
    for an output that is (or contains) the input ``like.source``.
    """
    out = Path(path)
    fmt = _output_format(out, like)
    arr = _check_output_data(data, like, out)
    src = Path(like.source).resolve()
    dst = out.resolve()
    if dst == src or _is_within(src, dst):
        raise OutputExistsError(f"output {out}: is the input {like.source}; refusing to write over an input")
    if fmt == "npy":
        _write_npy(out, arr, like, overwrite)
    elif fmt == "nifti":
        _write_nifti(out, arr, like, overwrite, description)
    elif fmt == "hdf5":
        _write_hdf5(out, arr, like, overwrite, description)
    else:
        _write_dicom(out, arr, like, overwrite, description)
    return out


# --------------------------------------------------------------------------------------------
def _write_npy(out: Path, arr: np.ndarray, like: Volume, overwrite: bool) -> None:
    payload = arr[0] if like.squeeze and arr.shape[0] == 1 else arr
    with atomic_path(out, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, payload, allow_pickle=False)


def _write_nifti(out: Path, arr: np.ndarray, like: Volume, overwrite: bool, description: str) -> None:
    import nibabel as nib

    if like.fmt == "nifti" and isinstance(like.header, dict):
        info = like.header
        shape = tuple(info["shape"])
        vol = arr[0] if len(shape) == 2 else np.moveaxis(arr, 0, -1)
        vol = np.ascontiguousarray(vol).reshape(shape)
        hdr = info["header"].copy()
        img = info["image_class"](vol, info["affine"], header=hdr)
    else:
        if like.orientation is not None and np.shape(like.orientation) == (4, 4):
            affine = np.asarray(like.orientation, dtype=np.float64)
        else:
            affine = np.eye(4)
            if like.spacing:
                for i, v in enumerate(like.spacing[:3]):
                    affine[i, i] = float(v)
        vol = arr[0] if like.squeeze and arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        img = nib.Nifti1Image(np.ascontiguousarray(vol), affine)
        img.header.set_xyzt_units("mm")
    img.set_data_dtype(np.float32)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0.0
    img.header["cal_max"] = 0.0
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    gz = out.name.lower().endswith(".gz")
    with atomic_path(out, overwrite) as tmp:
        with open(tmp, "wb") as raw:
            if gz:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as fh:
                    img.to_file_map({"image": nib.FileHolder(fileobj=fh)})
            else:
                img.to_file_map({"image": nib.FileHolder(fileobj=raw)})


def _write_hdf5(out: Path, arr: np.ndarray, like: Volume, overwrite: bool, description: str) -> None:
    import h5py

    info = like.header if like.fmt == "hdf5" and isinstance(like.header, dict) else {}
    payload = arr[0] if like.squeeze and arr.shape[0] == 1 else arr
    with atomic_path(out, overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=payload)
            for key, value in (info.get("attrs") or {}).items():
                try:
                    f.attrs[key] = value
                except (TypeError, ValueError):  # an attribute type h5py cannot write back
                    continue
            if "max" in f.attrs:
                f.attrs["sgf_input_max"] = f.attrs["max"]
            f.attrs["max"] = float(arr.max())  # fastMRI: 'max' is the maximum of this file's image
            f.attrs["sgf_source"] = str(like.source)
            f.attrs["sgf_description"] = description
            if info.get("ismrmrd_header") is not None:
                f.create_dataset("ismrmrd_header", data=info["ismrmrd_header"])


# --------------------------------------------------------------------------------------------
def _quantise(arr: np.ndarray) -> tuple[np.ndarray, str, str, float, float]:
    """uint16 stored values with DICOM-DS slope/intercept; the reader's float values survive
    to within slope/2 (the DS strings are parsed back before quantising, so no drift)."""
    from pydicom.valuerep import format_number_as_ds

    vmin, vmax = float(arr.min()), float(arr.max())
    if vmin >= 0:
        inter = 0.0
        slope = vmax / 65535.0 if vmax > 0 else 1.0
    else:
        inter = vmin
        slope = (vmax - vmin) / 65535.0 if vmax > vmin else 1.0
    inter_s = format_number_as_ds(inter) if inter else "0"
    inter_f = float(inter_s)
    slope_s = format_number_as_ds(slope)
    slope_f = float(slope_s)
    if slope_f <= 0:  # underflow of a tiny range
        slope_s, slope_f = "1", 1.0
    stored = np.clip(np.rint((arr.astype(np.float64) - inter_f) / slope_f), 0, 65535).astype("<u2")
    return stored, slope_s, inter_s, vmin, vmax


def _series_description(t: Any) -> str:
    base = str(t.get("SeriesDescription", "") or "").strip()
    return (base[: 64 - len(DICOM_SERIES_SUFFIX)] + DICOM_SERIES_SUFFIX).strip()


def _dicom_dataset(t: Any, stored: np.ndarray, index: int, series_uid: str, slope: str, inter: str,
                   vmin: float, vmax: float, description: str, now: _dt.datetime) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    for elem in t:  # copy patient/study/equipment/geometry; skip pixel and stale elements
        if elem.tag.is_private or elem.tag.group in (0x0002, 0x7FE0) or elem.keyword in _DICOM_DROP:
            continue
        ds.add(copy.deepcopy(elem))
    sop_class = str(t.get("SOPClassUID", "") or "")
    ds.SOPClassUID = sop_class if sop_class in _CLASSIC_SOP_CLASSES else _MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    try:
        number = int(t.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        number = 0
    ds.SeriesNumber = number + DICOM_SERIES_NUMBER_OFFSET
    ds.SeriesDescription = _series_description(t)
    ds.InstanceNumber = index + 1
    image_type = t.get("ImageType", []) or []
    image_type = [image_type] if isinstance(image_type, str) else list(image_type)
    ds.ImageType = ["DERIVED", "SECONDARY"] + [str(v) for v in image_type[2:3]]
    ds.DerivationDescription = description[:1024]
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    if "SeriesDate" not in ds:
        ds.SeriesDate = ds.ContentDate
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = inter
    from pydicom.valuerep import format_number_as_ds

    ds.WindowCenter = format_number_as_ds((vmin + vmax) / 2)
    ds.WindowWidth = format_number_as_ds(max(vmax - vmin, 1e-6))
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _replaceable(out: Path) -> bool:
    """An existing output folder may be replaced only if it holds nothing but .dcm files."""
    if not out.is_dir():
        return True
    return all(q.is_file() and q.name.lower().endswith(".dcm") for q in out.iterdir())


def _write_dicom(out: Path, arr: np.ndarray, like: Volume, overwrite: bool, description: str) -> None:
    from pydicom.uid import generate_uid

    templates = like.header if isinstance(like.header, list) else None
    if like.fmt != "dicom" or templates is None or len(templates) != arr.shape[0]:
        raise InputError(f"output {out}: a DICOM series can only be written for a DICOM input "
                         f"({like.source} is {like.fmt})")
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out}: already exists; pass --force to overwrite it")
        if not _replaceable(out):
            raise OutputExistsError(f"{out}: exists and holds more than a DICOM series; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    stored, slope, inter, vmin, vmax = _quantise(arr)
    series_uid = generate_uid()
    now = _dt.datetime.now()
    tmp = temp_beside(out, directory=True)
    try:
        for i, t in enumerate(templates):
            ds = _dicom_dataset(t, stored[i], i, series_uid, slope, inter, vmin, vmax, description, now)
            ds.save_as(tmp / f"IM{i + 1:05d}.dcm", enforce_file_format=True)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise OutputExistsError(f"{out}: appeared while writing; pass --force to overwrite it")
            aside = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(out, aside)
            os.replace(tmp, out)
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                aside.unlink(missing_ok=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
