"""Write a reconstruction back in the form the user brought the target in (no torch).

:func:`write_volume` writes float32 magnitude images as .npy, NIfTI (the input's header and
affine; data type float32, scaling reset), HDF5 (a fastMRI-style ``reconstruction`` dataset with
the input's attributes) or a new derived DICOM series (:mod:`.dicom_series`: UIDs derived from
the input UIDs, the input's geometry, references to both inputs, classic single-frame files --
also when the input was an Enhanced multi-frame object, because every viewer and PACS reads
those). Every output is written atomically (a temporary file or folder beside the target,
renamed into place) and an existing output is refused unless
``overwrite=True``. An input is never written over.
"""

from __future__ import annotations

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
    description: str | None = None,
    reference: Volume | None = None,
    result_key: str | None = None,
) -> Path:
    """Write ``data`` ((N, H, W) or (H, W) on ``like``'s grid) in ``like``'s form; return the path.

    The format follows the output suffix (.npy, .nii, .nii.gz, .h5/.hdf5); any other name is a
    DICOM series folder, which needs a DICOM ``like`` (its patient, study and geometry tags are
    copied). Geometry comes from ``like``: a NIfTI output of a non-NIfTI input uses
    ``like.orientation`` (DICOM) or a diagonal affine from ``like.spacing`` (identity if unknown).
    Raises :class:`OutputExistsError` for an existing output without ``overwrite`` and, always,
    for an output that is (or contains) the input ``like.source``.

    ``description`` is the derivation text (engine, registration; default "SGF-MRI reconstruction"):
    NIfTI ``descrip``, HDF5 ``sgf_description``, DICOM DerivationDescription. ``reference`` (the
    reference volume) lets a DICOM output reference both input series and derive its UIDs from
    them (:mod:`sgf_deploy.data.dicom_series`) and ``result_key`` (what makes the result this
    result beyond its inputs, e.g. the engine's sha256; default: ``description``): the same inputs
    and key give the same UIDs, so a PACS replaces a re-sent result instead of duplicating it.
    """
    description = description or "SGF-MRI reconstruction"
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
        _write_dicom(out, arr, like, overwrite, description, reference, result_key)
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
def _replaceable(out: Path) -> bool:
    """An existing output folder may be replaced only if it holds nothing but .dcm files."""
    if not out.is_dir():
        return True
    return all(q.is_file() and q.name.lower().endswith(".dcm") for q in out.iterdir())


def _write_dicom(out: Path, arr: np.ndarray, like: Volume, overwrite: bool, description: str,
                 reference: Volume | None, result_key: str | None) -> None:
    from .dicom_series import write_derived_series

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
    tmp = temp_beside(out, directory=True)
    try:
        write_derived_series(tmp, arr, templates, reference=reference, description=description,
                             result_key=result_key)
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
