"""A reconstruction as a *derived* DICOM series a PACS accepts (no torch).

What a PACS administrator checks, and what this module does about it:

* **identity**: ImageType ``DERIVED\\SECONDARY``; new Series and SOP Instance UIDs derived
  deterministically (``pydicom.uid.generate_uid(entropy_srcs=...)``) from the input UIDs and the
  derivation text (engine sha256, registration), so that sending the same result again replaces
  it instead of duplicating it;
* **equipment**: this toolkit and its version, not the scanner (Manufacturer, model, software);
* **references**: SourceImageSequence (per slice: the target slice and, where the reference has
  as many slices, the reference slice) and the Common Instance Reference module
  (ReferencedSeriesSequence; a reference series from another study goes into
  StudiesContainingOtherReferencedInstancesSequence), DerivationCodeSequence and a
  DerivationDescription naming the engine and the registration applied;
* **pixels**: the target's own stored integer range and Modality LUT. An MR target without
  RescaleSlope/RescaleIntercept gets plain integers and no Modality LUT (not part of the MR IOD);
  its negative values (network undershoot of a magnitude image, which unsigned pixels cannot
  hold) are set to 0 and counted in the DerivationDescription. Only when the values cannot be
  held that way (above the 16-bit range, or outside the range of a target's own rescale) is a new
  slope/intercept written, and the DerivationDescription says so. WindowCenter/WindowWidth are
  recomputed from the written values;
* patient, study, frame of reference, acquisition and geometry attributes are carried over.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__

#: Appended to the SeriesDescription of a written DICOM series.
DICOM_SERIES_SUFFIX = " SGF-MRI"
#: Added to the SeriesNumber of a written DICOM series.
DICOM_SERIES_NUMBER_OFFSET = 1000
MANUFACTURER = "sgf-deploy"
MODEL_NAME = "sgf-deploy SGF-MRI"

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_CLASSIC_SOP_CLASSES = {
    MR_IMAGE_STORAGE,
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
}
#: Elements of the input that would be wrong for the new pixel data, the new series or its equipment.
_DROP = frozenset((
    # pixels and their description
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "NumberOfFrames", "BitsStored", "HighBit",
    "LargestImagePixelValue", "SmallestImagePixelValue", "LargestPixelValueInSeries",
    "SmallestPixelValueInSeries", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction",
    "VOILUTSequence", "ModalityLUTSequence", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "IconImageSequence", "PlanarConfiguration", "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor", "BluePaletteColorLookupTableDescriptor", "PixelAspectRatio",
    # identity and references of the input instance
    "SOPInstanceUID", "SeriesInstanceUID", "ReferencedImageSequence", "SourceImageSequence",
    "SourceInstanceSequence", "DerivationCodeSequence", "DerivationDescription", "ReferencedSeriesSequence",
    "StudiesContainingOtherReferencedInstancesSequence", "ReferencedInstanceSequence",
    "InstanceCreationDate", "InstanceCreationTime", "InstanceCreatorUID", "ContentDate", "ContentTime",
    # the scanner as equipment: this series comes from sgf-deploy
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "DeviceSerialNumber", "DeviceUID",
    "StationName", "GantryID", "SpatialResolution", "DateOfLastCalibration", "TimeOfLastCalibration",
    "DateTimeOfLastCalibration", "ManufacturerDeviceClassUID", "UDISequence",
))
_LOSSY = ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")


@dataclass
class PixelPlan:
    """How the float reconstruction is stored: integers, encoding and (optional) Modality LUT."""

    stored: np.ndarray  # (N, H, W) '<u2' or '<i2'
    signed: bool
    bits_stored: int
    rescale: list[tuple[str, str]] | None  # per-slice (slope, intercept) DS strings; None: no Modality LUT
    window: tuple[str, str]  # (centre, width) DS strings in output values
    clipped: int  # negative values of an unsigned target set to 0
    note: str  # what the description must say about the pixels ('' when nothing to say)


def _number(value: Any, default: float) -> float:
    try:
        out = float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _ds_string(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value)) if value else "0"


def plan_pixels(arr: np.ndarray, templates: Sequence[Any]) -> PixelPlan:
    """Map float32 ``arr`` (N, H, W) onto the target's stored integers (see the module docstring)."""
    t0 = templates[0]
    signed = int(t0.get("PixelRepresentation", 0) or 0) == 1
    bits_in = int(_number(t0.get("BitsStored"), 16))
    lo, hi = (-32768, 32767) if signed else (0, 65535)
    slopes = np.array([_number(t.get("RescaleSlope"), 1.0) or 1.0 for t in templates], dtype=np.float64)
    inters = np.array([_number(t.get("RescaleIntercept"), 0.0) for t in templates], dtype=np.float64)
    identity = bool(np.all(slopes == 1.0) and np.all(inters == 0.0))
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.rint((arr.astype(np.float64) - inters[:, None, None]) / slopes[:, None, None])
    clipped, note = 0, ""
    if identity and not signed and values.min() < 0:  # a magnitude image stored as plain unsigned integers
        clipped = int(np.count_nonzero(values < 0))
        note = f"{clipped} negative value(s) (down to {float(arr.min()):.4g}) set to 0"
        values = np.maximum(values, 0)
    if values.min() >= lo and values.max() <= hi:
        stored = values.astype("<i2" if signed else "<u2")
        rescale = None if identity else [(_ds_string(s), _ds_string(b)) for s, b in zip(slopes, inters)]
        real = values * slopes[:, None, None] + inters[:, None, None]
    else:  # cannot be held in the target's encoding: one new slope/intercept over the full uint16 range
        stored, slope_s, inter_s = _requantise(arr)
        signed, rescale = False, [(slope_s, inter_s)] * arr.shape[0]
        real = stored.astype(np.float64) * float(slope_s) + float(inter_s)
        note = (f"values {float(arr.min()):.6g}..{float(arr.max()):.6g} exceed the target's stored range; "
                f"written with RescaleSlope {slope_s} / RescaleIntercept {inter_s}")
    bits = _bits_needed(stored, signed, bits_in)
    vmin, vmax = float(real.min()), float(real.max())
    window = (_ds_string((vmin + vmax) / 2), _ds_string(max(vmax - vmin, 1.0)))
    return PixelPlan(stored, signed, bits, rescale, window, clipped, note)


def _requantise(arr: np.ndarray) -> tuple[np.ndarray, str, str]:
    """uint16 over the full range with DS slope/intercept parsed back before quantising (no drift)."""
    vmin, vmax = float(arr.min()), float(arr.max())
    inter = 0.0 if vmin >= 0 else vmin
    span = vmax - inter
    slope_s = _ds_string(span / 65535.0 if span > 0 else 1.0)
    inter_s = _ds_string(inter)
    slope = float(slope_s) if float(slope_s) > 0 else 1.0
    stored = np.clip(np.rint((arr.astype(np.float64) - float(inter_s)) / slope), 0, 65535).astype("<u2")
    return stored, _ds_string(slope), inter_s


def _bits_needed(stored: np.ndarray, signed: bool, bits_in: int) -> int:
    """The target's BitsStored when the values fit it, else 16."""
    bits = min(max(bits_in, 1), 16)
    if signed:
        ok = stored.min() >= -(1 << (bits - 1)) and stored.max() <= (1 << (bits - 1)) - 1
    else:
        ok = stored.max() <= (1 << bits) - 1
    return bits if ok else 16


# ------------------------------------------------------------------------------------- identity
def _sources(volume: Any) -> list[Any]:
    """The per-slice DICOM templates of a volume (empty for a non-DICOM one)."""
    header = getattr(volume, "header", None)
    return list(header) if getattr(volume, "fmt", None) == "dicom" and isinstance(header, list) else []


def derived_uids(templates: Sequence[Any], reference: Any, result_key: str) -> tuple[str, list[str]]:
    """(series UID, per-slice SOP Instance UIDs), a pure function of the input UIDs (the reference
    series UID, or for a non-DICOM reference the SHA-256 of its pixels) and ``result_key``."""
    from pydicom.uid import generate_uid

    target_series = str(templates[0].get("SeriesInstanceUID", "") or "")
    if not target_series:
        return generate_uid(), [generate_uid() for _ in templates]
    ref_templates = _sources(reference)
    if ref_templates:
        ref_key = str(ref_templates[0].get("SeriesInstanceUID", "") or "")
    elif reference is not None and getattr(reference, "data", None) is not None:
        ref_key = hashlib.sha256(np.ascontiguousarray(reference.data).tobytes()).hexdigest()
    else:
        ref_key = "(no reference)"
    series_uid = generate_uid(entropy_srcs=["sgf-deploy derived series", target_series, ref_key, result_key])
    sops = [generate_uid(entropy_srcs=[series_uid, str(t.get("SOPInstanceUID", "") or ""), str(i)])
            for i, t in enumerate(templates)]
    return series_uid, sops


# ----------------------------------------------------------------------------------- references
def _code(value: str, meaning: str, scheme: str = "DCM") -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _instance_ref(t: Any, purpose: bool) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = str(t.SOPClassUID)
    item.ReferencedSOPInstanceUID = str(t.SOPInstanceUID)
    if purpose:
        item.PurposeOfReferenceCodeSequence = [_code("121322", "Source image for image processing operation")]
    return item


def _referable(t: Any) -> bool:
    return bool(t.get("SOPClassUID")) and bool(t.get("SOPInstanceUID"))


def _common_instance_reference(ds: Any, target: Sequence[Any], reference: Sequence[Any]) -> None:
    """ReferencedSeriesSequence (this study) / StudiesContainingOtherReferencedInstancesSequence."""
    from pydicom.dataset import Dataset

    def series_item(templates: Sequence[Any]) -> Any:
        item = Dataset()
        item.SeriesInstanceUID = str(templates[0].SeriesInstanceUID)
        seen: dict[str, Any] = {}
        for t in templates:
            if _referable(t):
                seen.setdefault(str(t.SOPInstanceUID), _instance_ref(t, purpose=False))
        item.ReferencedInstanceSequence = list(seen.values())
        return item

    same, other, seen_series = [], [], set()
    study = str(ds.get("StudyInstanceUID", "") or "")
    for templates in (target, reference):
        uid = str(templates[0].get("SeriesInstanceUID", "") or "") if templates else ""
        if uid and uid not in seen_series and any(_referable(t) for t in templates):
            seen_series.add(uid)
            (same if str(templates[0].get("StudyInstanceUID", "") or "") == study else other).append(templates)
    if same:
        ds.ReferencedSeriesSequence = [series_item(s) for s in same]
    if other:
        studies = []
        for templates in other:
            item = Dataset()
            item.StudyInstanceUID = str(templates[0].get("StudyInstanceUID", ""))
            item.ReferencedSeriesSequence = [series_item(templates)]
            studies.append(item)
        ds.StudiesContainingOtherReferencedInstancesSequence = studies


# -------------------------------------------------------------------------------------- datasets
def series_description(t: Any) -> str:
    base = str(t.get("SeriesDescription", "") or "").strip()
    return (base[: 64 - len(DICOM_SERIES_SUFFIX)] + DICOM_SERIES_SUFFIX).strip()


def _copy_carried(t: Any) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    lossy = str(t.get("LossyImageCompression", "") or "") == "01"
    for elem in t:  # patient / study / frame of reference / acquisition / geometry
        if elem.tag.is_private or elem.tag.group in (0x0002, 0x7FE0) or elem.keyword in _DROP:
            continue
        if elem.keyword in _LOSSY and not lossy:
            continue
        ds.add(copy.deepcopy(elem))
    return ds


def derived_dataset(t: Any, index: int, plan: PixelPlan, uids: tuple[str, str], sources: list[Any],
                    references: tuple[Sequence[Any], Sequence[Any]], description: str, now: _dt.datetime) -> Any:
    """Slice ``index`` of the derived series: ``t`` its target template, ``uids`` (series, SOP),
    ``sources`` the instances it was made from, ``references`` (target, reference) templates."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _copy_carried(t)
    sop_class = str(t.get("SOPClassUID", "") or "")
    ds.SOPClassUID = sop_class if sop_class in _CLASSIC_SOP_CLASSES else MR_IMAGE_STORAGE
    ds.SeriesInstanceUID, ds.SOPInstanceUID = uids
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    if not ds.get("SeriesDate"):
        ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = MANUFACTURER, MODEL_NAME, f"sgf-deploy {__version__}"
    ds.SeriesNumber = int(_number(t.get("SeriesNumber"), 0)) + DICOM_SERIES_NUMBER_OFFSET
    ds.SeriesDescription = series_description(t)
    ds.InstanceNumber = index + 1
    image_type = t.get("ImageType", []) or []
    image_type = [image_type] if isinstance(image_type, str) else [str(v) for v in image_type]
    ds.ImageType = ["DERIVED", "SECONDARY"] + (image_type[2:3] or ["OTHER"])
    ds.DerivationDescription = description[:1024]
    ds.DerivationCodeSequence = [_code("110001", "Image Processing")]
    if sources:
        ds.SourceImageSequence = [_instance_ref(s, purpose=True) for s in sources]
    _common_instance_reference(ds, *references)
    stored = plan.stored[index]
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, plan.bits_stored, plan.bits_stored - 1
    ds.PixelRepresentation = 1 if plan.signed else 0
    if plan.rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = plan.rescale[index]
        if ds.SOPClassUID != MR_IMAGE_STORAGE and "RescaleType" in t:
            ds.RescaleType = t.RescaleType
    ds.WindowCenter, ds.WindowWidth = plan.window
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_derived_series(folder: Path, arr: np.ndarray, templates: Sequence[Any], *, reference: Any = None,
                         description: str = "SGF-MRI reconstruction", result_key: str | None = None) -> list[Path]:
    """Write the derived series of ``arr`` (float32 (N, H, W), one slice per template) into the
    existing, empty ``folder`` as ``IM00001.dcm``...; the caller renames the folder into place.
    UIDs follow from the inputs and ``result_key`` (default: ``description``)."""
    plan = plan_pixels(arr, templates)
    text = description if not plan.note else f"{description}; pixels: {plan.note}"
    series_uid, sops = derived_uids(templates, reference, result_key if result_key is not None else description)
    ref_templates = _sources(reference)
    now = _dt.datetime.now()
    written = []
    for i, t in enumerate(templates):
        candidates = [t] + ([ref_templates[i]] if len(ref_templates) == len(templates) else [])
        sources = list({str(s.SOPInstanceUID): s for s in candidates if _referable(s)}.values())
        ds = derived_dataset(t, i, plan, (series_uid, sops[i]), sources, (templates, ref_templates), text, now)
        path = folder / f"IM{i + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
