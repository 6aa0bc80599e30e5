"""Read the image files users bring (.npy, NIfTI, DICOM series, fastMRI/M4Raw HDF5) safely.

Every file is untrusted. Each reader checks the shape and dtype it finds in the file's header
against the size limits below *before* allocating or reading pixel data, refuses anything it
cannot interpret unambiguously, and raises :class:`~sgf_deploy.errors.InputError` with one line
naming the file and the problem. The result is a :class:`~sgf_deploy.data.volume.Volume`: a
float32 (N, H, W) finite magnitude stack plus what the writer needs to give the reconstruction
back in the input's own format and geometry.

Conventions
-----------
* (N, H, W) = (slices, rows, columns). NIfTI keeps the slice axis last: its array (i, j, k) is
  read as (k, i, j) and written back as (i, j, k).
* ``Volume.spacing`` is (row, col[, slice]) in mm: the step along H, along W and along N.
* ``Volume.orientation`` (NIfTI, DICOM) is a 4x4 affine from voxel index (H, W, N) to RAS+ mm
  (NIfTI's affine as is; DICOM's LPS geometry converted), so grids of either format compare.

No torch here (the scanner-side runtime must stay torch-free); nibabel, pydicom and h5py are
imported only when a file of that format is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import InputError
from .volume import Volume

# --- size limits, checked against header information before any pixel data is allocated -----
#: Most slices in one stack (a 3-D brain at 0.5 mm is ~400; 2048 leaves room for 4-D-as-3-D).
MAX_SLICES: int = 2048
#: Longest in-plane side (fastMRI k-space is 640 x 368; 4096 covers any clinical matrix).
MAX_SIDE: int = 4096
#: Most voxels in one stack: 2**27 = 134,217,728 voxels = 512 MiB as float32.
MAX_VOXELS: int = 2**27
#: Most receive coils in a k-space dataset (clinical arrays have <= 128 channels).
MAX_COILS: int = 256

#: Tolerances used by :func:`check_same_grid` and the DICOM consistency checks.
SPACING_TOL_MM: float = 1e-3
ORIENTATION_TOL: float = 1e-3  # on unit direction vectors
ORIGIN_TOL_MM: float = 1e-2

FORMATS = ("npy", "nifti", "dicom", "hdf5")
_SUPPORTED = ".npy, .nii, .nii.gz, .h5/.hdf5, .dcm or a DICOM series folder"

#: Image datasets looked for (in this order) in an HDF5 file when no ``h5_key`` is given.
H5_IMAGE_KEYS = ("reconstruction_rss", "reconstruction_esc", "reconstruction")

_DICOMDIR = "1.2.840.10008.1.3.10"


def _fail(role: str, path: Any, problem: str) -> InputError:
    # one line, whatever a library's exception text looked like
    return InputError(" ".join(f"{role} {path}: {problem}".split()))


def _shape_str(shape: Iterable[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


# --------------------------------------------------------------------------------------------
# shared validation
# --------------------------------------------------------------------------------------------
def _check_dtype(dtype: np.dtype, path: Any, role: str) -> bool:
    """Refuse non-numeric dtypes; return True for complex (taken as magnitude)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise _fail(role, path, "contains Python objects (pickle); refusing to load")
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind == "V":
        raise _fail(role, path, f"has a structured dtype {dtype}; expected a plain numeric image")
    if dtype.kind == "b":
        raise _fail(role, path, "has dtype bool (a mask?); expected a numeric image")
    if dtype.kind not in "iufc":
        raise _fail(role, path, f"has non-numeric dtype {dtype}; expected integers, floats or complex")
    return dtype.kind == "c"


def _check_limits(nhw: tuple[int, int, int], path: Any, role: str) -> None:
    n, h, w = (int(s) for s in nhw)
    if n > MAX_SLICES:
        raise _fail(role, path, f"has {n} slices; the limit is {MAX_SLICES}")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise _fail(role, path, f"has {h}x{w} pixels per slice; the limit is {MAX_SIDE} per side")
    voxels = n * h * w
    if voxels > MAX_VOXELS:
        raise _fail(
            role,
            path,
            f"is {n}x{h}x{w} = {voxels} voxels ({voxels * 4 / 2**20:.0f} MiB as float32); "
            f"the limit is {MAX_VOXELS} voxels ({MAX_VOXELS * 4 / 2**20:.0f} MiB)",
        )


def _check_shape(shape: tuple[int, ...], path: Any, role: str) -> tuple[tuple[int, int, int], bool]:
    """(N, H, W) and squeeze for an array of ``shape``; refuse 0-d/1-d/>3-d/empty/too large."""
    shape = tuple(int(s) for s in shape)
    expected = "expected a 2-D slice (H, W) or a 3-D stack (N, H, W)"
    if len(shape) == 0:
        raise _fail(role, path, f"is a 0-d scalar; {expected}")
    if len(shape) == 1:
        raise _fail(role, path, f"is 1-D with shape {shape}; {expected}")
    if len(shape) > 3:
        raise _fail(role, path, f"is {len(shape)}-D with shape {shape}; {expected}")
    if 0 in shape:
        raise _fail(role, path, f"is empty (shape {shape})")
    nhw = (1, *shape) if len(shape) == 2 else shape
    _check_limits(nhw, path, role)  # type: ignore[arg-type]
    return nhw, len(shape) == 2  # type: ignore[return-value]


def check_array(arr: np.ndarray, path: Any, role: str = "input", notices: list[str] | None = None) -> np.ndarray:
    """Validate an image array and return it as a new float32 (N, H, W) array.

    2-D (H, W) becomes (1, H, W); 3-D is taken as (N, H, W). Integer dtypes are converted,
    complex is taken as magnitude (a notice is appended to ``notices`` when given); bool,
    string, datetime, object and structured dtypes, 0-d/1-d/>3-d/empty arrays, arrays over the
    size limits and non-finite values are refused with :class:`InputError`.
    """
    return _validate(arr, path, role, notices, copy=True)


def _validate(arr: Any, path: Any, role: str, notices: list[str] | None, copy: bool) -> np.ndarray:
    """:func:`check_array`; ``copy=False`` lets a float32 array the reader built itself through."""
    arr = np.asanyarray(arr)
    is_complex = _check_dtype(arr.dtype, path, role)
    nhw, _ = _check_shape(arr.shape, path, role)
    with np.errstate(over="ignore", invalid="ignore"):
        if is_complex:
            if notices is not None:
                notices.append(f"{role} {path}: complex values taken as magnitude")
            out = np.abs(arr).astype(np.float32, copy=False)
        else:
            out = np.array(arr, dtype=np.float32, copy=True) if copy else np.asarray(arr, dtype=np.float32)
    out = np.ascontiguousarray(out.reshape(nhw))
    bad = ~np.isfinite(out)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        src = np.asarray(arr).reshape(nhw)[bad]
        n_nonfinite = n_bad - int(np.count_nonzero(np.isfinite(src)))
        if n_nonfinite:
            raise _fail(role, path, f"contains {n_nonfinite} non-finite values (NaN or Inf)")
        raise _fail(role, path, f"contains {n_bad} values beyond the float32 range (|x| > 3.4e38)")
    return out


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    return None


def read_volume(path: str | Path, *, role: str = "input", h5_key: str | None = None) -> Volume:
    """Read an image stack from ``path``; see the module docstring for the conventions.

    Dispatch: ``.npy``; ``.nii``/``.nii.gz``; ``.h5``/``.hdf5`` (``h5_key`` picks the dataset,
    ignored for other formats); a folder (one DICOM series) or a single ``.dcm``/``.ima`` file;
    a file with another suffix is sniffed for the .npy, HDF5 or DICOM signature.
    ``role`` ("reference", "target", ...) prefixes every error message.
    """
    p = Path(path)
    try:
        if not p.exists():
            raise _fail(role, p, "no such file or folder")
        if p.is_dir():
            return _read_dicom(p, role, folder=True)
        low = p.name.lower()
        if low.endswith(".npy"):
            return _read_npy(p, role)
        if low.endswith((".nii", ".nii.gz")):
            return _read_nifti(p, role)
        if low.endswith((".h5", ".hdf5")):
            return _read_hdf5(p, role, h5_key)
        if low.endswith((".dcm", ".ima")):
            return _read_dicom(p, role, folder=False)
        if low.endswith(".npz"):
            raise _fail(role, p, "is an .npz archive; save one array with numpy.save (.npy)")
        kind = _sniff(p)
        if kind == "npy":
            return _read_npy(p, role)
        if kind == "hdf5":
            return _read_hdf5(p, role, h5_key)
        if kind == "dicom":
            return _read_dicom(p, role, folder=False)
        raise _fail(role, p, f"unsupported file type; expected {_SUPPORTED}")
    except OSError as exc:  # permissions, I/O errors, a folder where a file was expected ...
        raise _fail(role, p, f"cannot be read ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------
# .npy
# --------------------------------------------------------------------------------------------
def _read_npy(p: Path, role: str) -> Volume:
    fmt = np.lib.format
    with open(p, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
        except ValueError:
            raise _fail(role, p, "is not a .npy file (bad or missing magic bytes)") from None
        try:
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise _fail(role, p, f"uses .npy format version {version[0]}.{version[1]}, which is not supported")
        except ValueError as exc:
            raise _fail(role, p, f"has a corrupt .npy header ({exc})") from None
        offset = fh.tell()
    # Header checks first: nothing is unpickled or allocated before these pass.
    _check_dtype(dtype, p, role)
    _check_shape(shape, p, role)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = p.stat().st_size - offset
    if have < need:
        raise _fail(
            role,
            p,
            f"is truncated: the header declares {_shape_str(shape)} {dtype} ({need} bytes of data) "
            f"but the file holds {have} bytes after the header",
        )
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise _fail(role, p, f"cannot be read as .npy ({exc})") from None
    notices: list[str] = []
    data = check_array(arr, p, role, notices)
    del arr
    return Volume(data=data, source=p, fmt="npy", squeeze=len(shape) == 2, notices=notices)


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------
def _read_nifti(p: Path, role: str) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises many types for damaged files
        raise _fail(role, p, f"is not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise _fail(role, p, f"is a {type(img).__name__}, not a NIfTI-1/2 image")
    hdr = img.header
    shape = tuple(int(s) for s in hdr.get_data_shape())
    _check_dtype(hdr.get_data_dtype(), p, role)
    core = list(shape)
    while len(core) > 3 and core[-1] == 1:  # (X, Y, Z, 1): one volume
        core.pop()
    if len(core) < 2 or len(core) > 3:
        raise _fail(
            role, p, f"is {len(shape)}-D with shape {shape}; expected a 2-D or 3-D image (or 4-D with one volume)"
        )
    if 0 in core:
        raise _fail(role, p, f"is empty (shape {shape})")
    nhw = (core[2], core[0], core[1]) if len(core) == 3 else (1, core[0], core[1])
    _check_limits(nhw, p, role)
    if not p.name.lower().endswith(".gz"):
        need = int(np.prod(shape, dtype=np.int64)) * hdr.get_data_dtype().itemsize
        have = p.stat().st_size - int(getattr(img.dataobj, "offset", 0) or hdr.get_data_offset())
        if have < need:
            raise _fail(role, p, f"is truncated: {_shape_str(shape)} voxels need {need} bytes, the file holds {have}")
    try:
        raw = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter
    except Exception as exc:  # EOFError, zlib.error, BadGzipFile, OSError ...
        raise _fail(role, p, f"cannot be read: truncated or corrupt ({type(exc).__name__}: {exc})") from None
    raw = raw.reshape(core)
    arr = raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)
    notices: list[str] = []
    data = check_array(arr, p, role, notices)
    zooms = tuple(float(z) for z in hdr.get_zooms()[: len(core)])
    header = {
        "image_class": type(img),
        "header": hdr.copy(),
        "affine": np.array(img.affine, dtype=np.float64),
        "shape": shape,
    }
    return Volume(
        data=data,
        source=p,
        fmt="nifti",
        squeeze=len(core) == 2,
        spacing=zooms,
        orientation=np.array(img.affine, dtype=np.float64),
        header=header,
        notices=notices,
    )


# --------------------------------------------------------------------------------------------
# HDF5 (fastMRI / M4Raw)
# --------------------------------------------------------------------------------------------
def _h5_datasets(f: Any) -> list[str]:
    import h5py

    names = []
    for k in f.keys():
        try:
            if isinstance(f[k], h5py.Dataset):
                names.append(k)
        except (KeyError, OSError):  # a dangling link
            continue
    return sorted(names)


def _read_hdf5(p: Path, role: str, h5_key: str | None) -> Volume:
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise _fail(role, p, f"is not a readable HDF5 file ({exc})") from None
    with f:
        names = _h5_datasets(f)
        listing = ", ".join(names) if names else "no datasets"
        attrs: dict[str, Any] = {}
        for k in f.attrs:
            try:
                attrs[k] = f.attrs[k]
            except Exception:  # an attribute h5py cannot decode is not worth failing over
                continue
        ismrmrd = None
        if "ismrmrd_header" in names and f["ismrmrd_header"].size <= 1 and f["ismrmrd_header"].nbytes < 2**20:
            try:
                ismrmrd = f["ismrmrd_header"][()]
            except Exception:
                ismrmrd = None
        notices: list[str] = []
        if h5_key is not None:
            try:
                found = isinstance(f.get(h5_key), h5py.Dataset)  # a nested path works too
            except (KeyError, OSError, ValueError):
                found = False
            if not found:
                raise _fail(role, p, f"has no dataset '{h5_key}' (it has: {listing})")
            key = h5_key
        else:
            key = next((k for k in H5_IMAGE_KEYS if k in names), None)
            if key is None:
                if "kspace" not in names:
                    raise _fail(
                        role,
                        p,
                        f"has none of the datasets {', '.join(H5_IMAGE_KEYS)} or kspace "
                        f"(it has: {listing}); store the images as 'reconstruction_rss' (or k-space as 'kspace'), "
                        f"or read another dataset from Python with read_volume(path, h5_key=NAME)",
                    )
                key = "kspace"
            elif "kspace" in names and "mask" in names:
                notices.append(
                    f"{role} {p}: used '{key}'; the file also holds an undersampled 'kspace' with "
                    f"a 'mask' (its zero-filled image is read from Python with read_volume(path, h5_key='kspace'))"
                )
        kmask = None  # the column mask of undersampled k-space (the run's task and fidelity guard read it)
        if key == "kspace":
            data, squeeze = _h5_kspace_image(f, p, role, names, notices)
            if "mask" in names:  # checked by _h5_kspace_image
                kmask = np.broadcast_to(np.asarray(f["mask"][()]) != 0, data.shape[-2:]).any(axis=0)
        else:
            ds = f[key]
            _check_dtype(ds.dtype, f"{p}:{key}", role)
            _, squeeze = _check_shape(ds.shape, f"{p}:{key}", role)
            try:
                raw = ds[()]
            except Exception as exc:  # OSError for damaged chunks, TypeError for odd types
                raise _fail(role, f"{p}:{key}", f"cannot be read ({exc})") from None
            data = check_array(raw, f"{p}:{key}", role, notices)
    header = {"attrs": attrs, "dataset": key, "ismrmrd_header": ismrmrd, "mask": kmask}
    return Volume(data=data, source=p, fmt="hdf5", squeeze=squeeze, header=header, notices=notices)


def _h5_kspace_image(f: Any, p: Path, role: str, names: list[str], notices: list[str]) -> tuple[np.ndarray, bool]:
    """RSS of the centred inverse FFT of 'kspace' ((N,)[C,]H,W complex), masked if 'mask' exists."""
    ds = f["kspace"]
    where = f"{p}:kspace"
    if np.dtype(ds.dtype).kind != "c":
        _check_dtype(ds.dtype, where, role)  # names pickles/strings precisely
        raise _fail(role, where, f"has dtype {ds.dtype}; k-space must be complex")
    shape = tuple(int(s) for s in ds.shape)
    if len(shape) == 2:
        n, c, (h, w) = 1, 1, shape
    elif len(shape) == 3:
        (n, h, w), c = shape, 1
    elif len(shape) == 4:
        n, c, h, w = shape
    else:
        raise _fail(role, where, f"has shape {shape}; expected (H, W), (slices, H, W) or (slices, coils, H, W)")
    if 0 in shape:
        raise _fail(role, where, f"is empty (shape {shape})")
    _check_limits((n, h, w), where, role)
    if c > MAX_COILS:
        raise _fail(role, where, f"has {c} coils; the limit is {MAX_COILS}")
    mask = None
    if "mask" in names:
        m = f["mask"]
        mshape = tuple(int(s) for s in m.shape)
        try:
            ok = len(mshape) <= 2 and np.broadcast_shapes(mshape, (h, w)) == (h, w)
        except ValueError:
            ok = False
        if not ok:
            raise _fail(role, f"{p}:mask", f"has shape {mshape}, which does not fit k-space of {h}x{w} (expected ({w},))")
        if np.dtype(m.dtype).kind not in "biuf":
            raise _fail(role, f"{p}:mask", f"has dtype {m.dtype}; expected bool or numbers")
        mask = np.asarray(m[()]) != 0
        sampled = float(mask.mean()) if mask.size else 0.0
        if sampled == 0:
            raise _fail(role, f"{p}:mask", "samples nothing (all zeros)")
        notices.append(
            f"{role} {p}: zero-filled image from 'kspace' under the file's 'mask' "
            f"({sampled:.1%} sampled, about {1 / sampled:.1f}x acceleration)"
        )
    else:
        notices.append(f"{role} {p}: image = root-sum-of-squares of the inverse FFT of 'kspace' ({c} coil(s))")
    from .kspace import ifft2c, rss  # fastMRI's centred orthonormal transform

    out = np.empty((n, h, w), dtype=np.float32)
    try:
        for i in range(n):  # one slice at a time: memory stays at one slice of coils
            k = ds[()] if len(shape) == 2 else ds[i]
            if mask is not None:
                k = np.where(mask, k, 0)
            img = ifft2c(k)
            out[i] = rss(img, axis=0) if len(shape) == 4 else np.abs(img)
    except (OSError, TypeError, ValueError) as exc:
        raise _fail(role, where, f"cannot be read ({exc})") from None
    return _validate(out, where, role, None, copy=False), len(shape) == 2


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------
def _fg_value(ds: Any, frame: int, seq: str, attr: str) -> Any:
    """An Enhanced-MR functional-group value: per-frame first, then shared."""
    for top, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(top)
        if not groups or idx >= len(groups):
            continue
        item = groups[idx]
        inner = item.get(seq)
        if inner and len(inner) and attr in inner[0]:
            value = inner[0][attr].value
            if value not in (None, ""):
                return value
    return None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None or (isinstance(value, (str, bytes)) and not value):
        return None
    seq = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
    try:
        vals = tuple(float(v) for v in seq)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n else None


def _scalar(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _dicom_frames(f: Path, ds: Any) -> list[dict[str, Any]]:
    """One record per frame of ``ds``: geometry, rescale and where its pixels live."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    records = []
    for i in range(n_frames):
        if enhanced:
            iop = _floats(_fg_value(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
            ipp = _floats(_fg_value(ds, i, "PlanePositionSequence", "ImagePositionPatient"), 3)
            ps = _floats(_fg_value(ds, i, "PixelMeasuresSequence", "PixelSpacing"), 2)
            thick = _scalar(_fg_value(ds, i, "PixelMeasuresSequence", "SliceThickness"), 0.0)
            slope = _scalar(_fg_value(ds, i, "PixelValueTransformationSequence", "RescaleSlope"),
                            _scalar(ds.get("RescaleSlope"), 1.0))
            inter = _scalar(_fg_value(ds, i, "PixelValueTransformationSequence", "RescaleIntercept"),
                            _scalar(ds.get("RescaleIntercept"), 0.0))
        else:
            iop = _floats(ds.get("ImageOrientationPatient"), 6) if n_frames == 1 else None
            ipp = _floats(ds.get("ImagePositionPatient"), 3) if n_frames == 1 else None
            ps = _floats(ds.get("PixelSpacing"), 2)
            thick = _scalar(ds.get("SliceThickness"), 0.0)
            slope = _scalar(ds.get("RescaleSlope"), 1.0)
            inter = _scalar(ds.get("RescaleIntercept"), 0.0)
        records.append(
            dict(file=f, ds=ds, frame=i, n_frames=n_frames, enhanced=enhanced, rows=rows, cols=cols,
                 iop=iop, ipp=ipp, ps=ps, thick=thick, slope=slope, inter=inter,
                 instance=_scalar(ds.get("InstanceNumber"), float("nan")))
        )
    return records


def _differ(a: tuple[float, ...] | None, b: tuple[float, ...] | None, tol: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return bool(np.max(np.abs(np.subtract(a, b))) > tol)


def _fmt_vec(v: Iterable[float] | None) -> str:
    return "none" if v is None else "(" + ", ".join(f"{x:g}" for x in v) + ")"


#: One frame of a DICOM series, as built by :func:`_dicom_frames`.
_Frame = dict[str, Any]


def _read_dicom(p: Path, role: str, folder: bool) -> Volume:
    """One DICOM series (a folder, or a single classic or Enhanced multi-frame file) as a Volume.

    The steps run in this order, so the first problem found is the one reported: parse the
    headers, check they form one series, expand them into frames, check the frames share one
    grid, order the frames along the slice normal, then decode the pixels.
    """
    headers, notices = _dicom_headers(p, role, folder)
    _check_one_series(headers, p, role)
    frames = _dicom_series_frames(headers, p, role)
    first = frames[0]  # series-wide attributes (size, spacing, orientation) come from this frame
    _check_frames_agree(frames, p, role)
    n, h, w = len(frames), first["rows"], first["cols"]
    _check_limits((n, h, w), p, role)
    frames = _order_frames(frames, p, role, notices)
    spacing, orientation = _dicom_geometry(frames, first)
    data = _validate(_dicom_pixels(frames, h, w, role), p, role, notices, copy=False)
    templates = [_classic_template(fr) for fr in frames]
    if any(fr["enhanced"] for fr in frames):
        notices.append(f"{role} {p}: Enhanced multi-frame DICOM; output will be classic single-frame files")
    return Volume(
        data=data,
        source=p,
        fmt="dicom",
        squeeze=n == 1,
        spacing=spacing,
        orientation=orientation,
        header=templates,
        notices=notices,
    )


def _dicom_headers(p: Path, role: str, folder: bool) -> tuple[list[tuple[Path, Any]], list[str]]:
    """(file, header) of every DICOM image under ``p``, and a notice naming what was skipped.

    In a folder, non-DICOM files and DICOM files without an image (DICOMDIR, reports) are
    skipped; a single file that is not DICOM, or a damaged header anywhere, is refused.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(q for q in p.iterdir() if q.is_file()) if folder else [p]
    headers: list[tuple[Path, Any]] = []
    not_dicom = no_image = 0
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=False)
        except InvalidDicomError:
            if not folder:
                raise _fail(role, p, "is not a DICOM file (no DICOM preamble)") from None
            not_dicom += 1
            continue
        except Exception as exc:  # damaged header: struct/EOF/value errors from the parser
            raise _fail(role, f, f"is a damaged DICOM file ({type(exc).__name__}: {exc})") from None
        if str(ds.get("SOPClassUID", "")) == _DICOMDIR or "Rows" not in ds or "Columns" not in ds:
            no_image += 1
            continue
        headers.append((f, ds))
    if not headers:
        subdirs = sum(1 for q in p.iterdir() if q.is_dir()) if folder else 0
        hint = f"; it has {subdirs} subfolder(s): point at one series folder" if subdirs else ""
        raise _fail(role, p, f"holds no DICOM images ({not_dicom} non-DICOM file(s), "
                             f"{no_image} DICOM file(s) without an image){hint}")
    notices: list[str] = []
    if not_dicom or no_image:
        notices.append(f"{role} {p}: skipped {not_dicom} non-DICOM file(s) and {no_image} DICOM file(s) without an image")
    return headers, notices


def _series_uid(ds: Any) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "(no SeriesInstanceUID)")


def _check_one_series(headers: list[tuple[Path, Any]], p: Path, role: str) -> None:
    """Refuse images from more than one series, listing (up to six of) them."""
    series: dict[str, list[Path]] = {}
    for f, ds in headers:
        series.setdefault(_series_uid(ds), []).append(f)
    if len(series) > 1:
        desc = {_series_uid(ds): str(ds.get("SeriesDescription", "")) for _, ds in headers}
        listing = "; ".join(f"{uid} '{desc[uid]}' ({len(fs)} files)" for uid, fs in list(series.items())[:6])
        raise _fail(role, p, f"holds {len(series)} DICOM series, expected one: {listing}")


def _dicom_series_frames(headers: list[tuple[Path, Any]], p: Path, role: str) -> list[_Frame]:
    """Every frame of every header, in file order; refuses colour images and over MAX_SLICES frames."""
    frames: list[_Frame] = []
    for f, ds in headers:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise _fail(role, f, f"is a colour image (SamplesPerPixel={ds.SamplesPerPixel}); expected greyscale MR")
        try:
            n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            n_frames = 1
        if len(frames) + n_frames > MAX_SLICES:  # checked before _dicom_frames builds the records
            raise _fail(role, p, f"has more than {MAX_SLICES} images; the limit is {MAX_SLICES} slices")
        frames.extend(_dicom_frames(f, ds))
    return frames


def _check_frames_agree(frames: list[_Frame], p: Path, role: str) -> None:
    """Refuse frames that differ from the first in PixelSpacing, orientation or size."""
    first = frames[0]
    for key, label, tol in (("ps", "PixelSpacing", SPACING_TOL_MM), ("iop", "ImageOrientationPatient", 1e-4)):
        for fr in frames[1:]:
            if _differ(first[key], fr[key], tol):
                raise _fail(role, p, f"images disagree on {label}: {_fmt_vec(first[key])} in {first['file'].name} "
                                     f"but {_fmt_vec(fr[key])} in {fr['file'].name}")
    for fr in frames[1:]:
        if (fr["rows"], fr["cols"]) != (first["rows"], first["cols"]):
            raise _fail(role, p, f"images differ in size: {first['rows']}x{first['cols']} in {first['file'].name} "
                                 f"but {fr['rows']}x{fr['cols']} in {fr['file'].name}")


def _has_geometry(frames: list[_Frame]) -> bool:
    return all(fr["iop"] is not None and fr["ipp"] is not None for fr in frames)


def _slice_normal(iop: tuple[float, ...]) -> np.ndarray:
    """The slice normal (row cosine x column cosine) of an ImageOrientationPatient."""
    cosines = np.asarray(iop, dtype=np.float64)
    return np.cross(cosines[:3], cosines[3:])


def _order_frames(frames: list[_Frame], p: Path, role: str, notices: list[str]) -> list[_Frame]:
    """Slice order: position along the slice normal, else InstanceNumber, else file/frame order."""
    if _has_geometry(frames):
        return _order_by_position(frames, p, role, notices)
    if len(frames) > 1:
        inst = [fr["instance"] for fr in frames]
        if not any(np.isnan(inst)) and len(set(inst)) == len(inst):
            notices.append(f"{role} {p}: no ImagePositionPatient; slices ordered by InstanceNumber")
            return sorted(frames, key=lambda fr: fr["instance"])
        notices.append(f"{role} {p}: no slice positions; slices kept in file/frame order")
    return frames


def _frame_name(fr: _Frame) -> str:
    return fr["file"].name + ("" if fr["n_frames"] == 1 else f" frame {fr['frame'] + 1}")


def _order_by_position(frames: list[_Frame], p: Path, role: str, notices: list[str]) -> list[_Frame]:
    """Sort by position along the first frame's normal (stored as ``pos``); refuse two frames at
    one position (echoes, phases or stacks mixed in one series) and note uneven spacing."""
    normal = _slice_normal(frames[0]["iop"])
    for fr in frames:
        fr["pos"] = float(np.dot(np.asarray(fr["ipp"]), normal))
    frames = sorted(frames, key=lambda fr: fr["pos"])
    if len(frames) > 1:
        gaps = np.diff([fr["pos"] for fr in frames])
        j = int(np.argmin(gaps))
        if gaps[j] < SPACING_TOL_MM:
            a, b = frames[j], frames[j + 1]
            raise _fail(role, p, f"two images share slice position {a['pos']:g} mm ({_frame_name(a)} and "
                                 f"{_frame_name(b)}); multiple echoes/phases/stacks? export one image per position")
        if gaps.max() - gaps.min() > 1e-2 * max(abs(float(np.median(gaps))), 1e-6):
            notices.append(f"{role} {p}: uneven slice spacing ({gaps.min():g} to {gaps.max():g} mm)")
    return frames


def _dicom_geometry(frames: list[_Frame], first: _Frame) -> tuple[tuple[float, ...] | None, np.ndarray | None]:
    """(spacing, RAS affine) of frames already in slice order; ``first`` is the reference frame.

    Spacing is (row, col) from PixelSpacing, plus the median slice step when positions are known;
    the affine is None without ImageOrientationPatient/ImagePositionPatient on every frame.
    """
    spacing: tuple[float, ...] | None = None
    if first["ps"] is not None:
        spacing = (float(first["ps"][0]), float(first["ps"][1]))
    if not _has_geometry(frames):
        return spacing, None
    n = len(frames)
    iop = np.asarray(first["iop"], dtype=np.float64)
    ipp0 = np.asarray(frames[0]["ipp"], dtype=np.float64)
    ps = first["ps"] or (1.0, 1.0)
    aff = np.eye(4)
    aff[:3, 0] = iop[3:] * ps[0]  # H (row index) moves along the column direction cosine
    aff[:3, 1] = iop[:3] * ps[1]  # W (column index) moves along the row direction cosine
    if n > 1:
        aff[:3, 2] = (np.asarray(frames[-1]["ipp"]) - ipp0) / (n - 1)
        if spacing is not None:
            spacing = spacing + (float(np.median(np.diff([fr["pos"] for fr in frames]))),)
    else:
        aff[:3, 2] = _slice_normal(first["iop"]) * (first["thick"] or 1.0)
    aff[:3, 3] = ipp0
    return spacing, np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff  # LPS -> RAS


def _dicom_pixels(frames: list[_Frame], h: int, w: int, role: str) -> np.ndarray:
    """Decode every frame's pixels, rescaled, into an (N, H, W) float32 stack in ``frames`` order.

    Each file is decoded once, files in the order their first frame appears in the stack.
    """
    data = np.empty((len(frames), h, w), dtype=np.float32)
    by_file: dict[Path, list[tuple[int, _Frame]]] = {}
    for dest, fr in enumerate(frames):
        by_file.setdefault(fr["file"], []).append((dest, fr))
    for f, items in by_file.items():
        pix = _dicom_file_pixels(f, items[0][1]["n_frames"], h, w, role)
        for dest, fr in items:
            data[dest] = pix[fr["frame"]].astype(np.float64) * fr["slope"] + fr["inter"]
        del pix
    return data


def _dicom_file_pixels(f: Path, n_frames: int, h: int, w: int, role: str) -> np.ndarray:
    """The stored pixel values of ``f`` as an (n_frames, H, W) array; refuses undecodable data."""
    import pydicom

    full = None
    try:
        full = pydicom.dcmread(f, force=False)
        pix = full.pixel_array
    except Exception as exc:  # truncated pixel data, compressed without a decoder, ...
        ts = getattr(getattr(full, "file_meta", None), "TransferSyntaxUID", None)
        name = f" (transfer syntax {ts.name})" if ts is not None and hasattr(ts, "name") else ""
        raise _fail(role, f, f"pixel data cannot be decoded{name}: {exc}") from None
    pix = np.asarray(pix)
    if n_frames == 1:
        pix = pix.reshape(1, *pix.shape) if pix.ndim == 2 else pix
    if pix.shape != (n_frames, h, w):
        raise _fail(role, f, f"pixel data has shape {pix.shape}, expected {n_frames}x{h}x{w}")
    return pix


#: Enhanced-only and per-frame elements not copied into classic per-slice templates.
_ENHANCED_DROP = (
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "NumberOfFrames",
    "DimensionIndexSequence", "DimensionOrganizationSequence", "DimensionOrganizationType",
    "FrameIncrementPointer", "ConcatenationUID", "InConcatenationNumber", "InConcatenationTotalNumber",
    "ConcatenationFrameOffsetNumber", "SourceImageEvidenceSequence", "ReferencedImageEvidenceSequence",
)


def _classic_template(fr: dict[str, Any]) -> Any:
    """A header-only classic single-frame dataset for one slice (what the DICOM writer copies)."""
    import copy

    from pydicom.dataset import Dataset

    ds = fr["ds"]
    if not fr["enhanced"] and fr["n_frames"] == 1:
        return ds
    out = Dataset()
    for elem in ds:
        if elem.keyword in _ENHANCED_DROP or elem.tag.group == 0x7FE0:
            continue
        out.add(copy.deepcopy(elem))
    if fr["iop"] is not None:
        out.ImageOrientationPatient = [f"{v:.10g}" for v in fr["iop"]]
    if fr["ipp"] is not None:
        out.ImagePositionPatient = [f"{v:.10g}" for v in fr["ipp"]]
    if fr["ps"] is not None:
        out.PixelSpacing = [f"{v:.10g}" for v in fr["ps"]]
    if fr["thick"]:
        out.SliceThickness = f"{fr['thick']:.10g}"
    if fr["slope"] != 1.0 or fr["inter"] != 0.0:  # the frame's stored-value scale (the writer keeps it)
        out.RescaleSlope, out.RescaleIntercept = f"{fr['slope']:.10g}", f"{fr['inter']:.10g}"
    if getattr(ds, "file_meta", None) is not None:
        out.file_meta = copy.deepcopy(ds.file_meta)
    return out


# --------------------------------------------------------------------------------------------
# grid comparison
# --------------------------------------------------------------------------------------------
def _directions(aff: np.ndarray) -> np.ndarray:
    m = np.asarray(aff, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    norms[norms == 0] = 1.0
    return m / norms


def _fmt_dirs(d: np.ndarray) -> str:
    return " ".join("(" + ",".join(f"{x:.3g}" for x in d[:, j]) + ")" for j in range(3))


def check_same_grid(reference: Volume, target: Volume) -> None:
    """Refuse a reference and a target that are not on the same voxel grid.

    Always compares the (N, H, W) shape; where both volumes carry them (NIfTI, DICOM) also the
    voxel spacing (to 1e-3 mm), the axis directions (unit vectors to 1e-3) and the position of the
    first voxel (to 1e-2 mm) -- the network fuses the two contrasts pixel by pixel, so a shift or a
    flip between them is as wrong as a size mismatch. Raises :class:`InputError` stating both
    values and both files.
    """
    ref, tar = f"reference {reference.source}", f"target {target.source}"
    tail = "they must be on the same grid"
    if reference.data.shape != target.data.shape:
        raise InputError(f"{ref} is {reference.shape_str()} but {tar} is {target.shape_str()}; {tail}")
    if reference.spacing is not None and target.spacing is not None:
        k = min(len(reference.spacing), len(target.spacing))
        a, b = reference.spacing[:k], target.spacing[:k]
        if _differ(a, b, SPACING_TOL_MM):
            raise InputError(
                f"{ref} has voxel spacing {'x'.join(f'{v:g}' for v in a)} mm but {tar} has "
                f"{'x'.join(f'{v:g}' for v in b)} mm; {tail} (resample one onto the other)"
            )
    if reference.orientation is not None and target.orientation is not None:
        da, db = _directions(reference.orientation), _directions(target.orientation)
        if np.max(np.abs(da - db)) > ORIENTATION_TOL:
            raise InputError(
                f"{ref} has axis directions (H W N, RAS) {_fmt_dirs(da)} but {tar} has {_fmt_dirs(db)}; {tail}"
            )
        oa = np.asarray(reference.orientation, dtype=np.float64)[:3, 3]
        ob = np.asarray(target.orientation, dtype=np.float64)[:3, 3]
        if np.max(np.abs(oa - ob)) > ORIGIN_TOL_MM:
            raise InputError(
                f"{ref} starts at {_fmt_vec(np.round(oa, 3))} mm (RAS) but {tar} starts at "
                f"{_fmt_vec(np.round(ob, 3))} mm; {tail}"
            )
