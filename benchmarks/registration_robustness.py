"""Registration robustness study (issue 15): what reference motion and other grids cost, with and
without ``--register``.

    python benchmarks/registration_robustness.py [--n 32] [--threads 1] [--out benchmarks/results/registration.json]
    python benchmarks/registration_robustness.py --quick        # a 2-minute check: n=4, fewer conditions

Everything runs through the real runtime (``sgf_deploy.runtime.pipeline.reconstruct_volumes`` with
the embedded default engine: an empty ``engines_dir`` so no other engine is picked) on the
simulator's held-out **test** split (T1 reference -> T2 recon4x), ground truth known:

1. motion: the reference is moved (shifts of 0, 2, 5, 10, 20 px along (0.8, 0.6); rotations of
   0, 2, 5, 10 degrees about the slice centre; one cubic B-spline resampling of the simulated
   reference -- one interpolation more than a real moved acquisition has), then reconstructed with
   ``register="off"`` and ``"auto"``; PSNR/SSIM (fastMRI) vs ground truth, difference to the
   aligned run (unmoved reference, ``register="off"``);
2. calibration of ``auto``'s threshold on the **validation** split: sub-pixel shifts with
   ``"off"`` vs ``"rigid"``, and the estimate ``auto`` sees on aligned data;
3. grids: the reference written on a finer (0.5 mm) and a coarser (1.25 mm) in-plane grid of the
   same field of view (its k-space zero-padded or cropped, as a scanner's other matrix would give
   it), NIfTI and DICOM (target on the 1 mm grid, same format), read back with ``read_volume`` and
   reconstructed; difference to the same-grid run in that format;
4. timing: the registration's wall time per 320x320 slice in ``pair_inputs`` (the simulator's
   slices on a 320x320 matrix of the same field of view, moved by 10 px and 5 degrees) for stacks
   of 1, 8, 16 and 32 slices, with 1 and 2 threads (wall time depends on the machine's load,
   which the JSON records; this process's CPU time per slice is recorded beside it).

Not a test (it takes minutes); the JSON records the machine and the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgf_deploy.bench.machine import loadavg, machine_info  # noqa: E402
from sgf_deploy.data.simulator import simulate  # noqa: E402
from sgf_deploy.data.volume import Volume  # noqa: E402
from sgf_deploy.geometry import resample, rigid_index_matrix  # noqa: E402
from sgf_deploy.geometry.register import set_threads  # noqa: E402
from sgf_deploy.metrics import psnr, ssim  # noqa: E402
from sgf_deploy.runtime.pipeline import RunSettings, reconstruct_volumes  # noqa: E402

DIRECTION = (0.8, 0.6)  # shift direction (columns, rows): lengths stay whole pixels


def moved(stack: np.ndarray, shift: float, angle: float) -> np.ndarray:
    """``stack`` (N, H, W) with its content displaced by ``shift`` px along DIRECTION and rotated
    by ``angle`` degrees about the slice centre (cubic B-spline, zeros outside)."""
    if shift == 0 and angle == 0:
        return stack
    n, h, w = stack.shape
    m = rigid_index_matrix((shift * DIRECTION[0], shift * DIRECTION[1]), angle, ((w - 1) / 2, (h - 1) / 2), (1.0, 1.0))
    return resample(stack, [np.linalg.inv(m)], stack.shape, interpolator="bspline")


def quality(gt: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    return (float(np.mean([psnr(g, x) for g, x in zip(gt, image)])),
            float(np.mean([ssim(g, x) for g, x in zip(gt, image)])))


class Runner:
    """reconstruct_volumes with the embedded default engine, one engine load reused."""

    def __init__(self, threads: int, engines_dir: Path, engine: str = "auto") -> None:
        self.threads = threads
        self.engines_dir = engines_dir
        self.engine = engine

    def __call__(self, reference, target, register: str) -> tuple[np.ndarray, dict]:  # noqa: ANN001
        settings = RunSettings(engine=self.engine, threads=self.threads, register=register, engines_dir=self.engines_dir)
        warnings: list[str] = []
        rec = reconstruct_volumes(reference, target, settings, warn=warnings.append)
        return rec.image, {"provenance": rec.provenance, "warnings": warnings,
                           "pair_s": rec.timings.get("pair")}


def _vol(arr: np.ndarray, name: str) -> Volume:
    return Volume(data=np.ascontiguousarray(arr, np.float32), source=Path(name), fmt="npy")


def motion_study(run: Runner, data: dict, shifts: list[float], angles: list[float], margin: int = 0) -> dict:
    """``margin``: zero pixels added around reference and target (a field of view that keeps the
    moved head inside it); the output is cropped back and scored on the original region."""
    pad = ((0, 0), (margin, margin), (margin, margin))
    ref, tar, gt = np.pad(data["reference"], pad), np.pad(data["target"], pad), data["ground_truth"]
    target = _vol(tar, "target.npy")
    crop = (slice(None), slice(margin, tar.shape[1] - margin), slice(margin, tar.shape[2] - margin))
    inner = run
    run = lambda r, t, mode: (lambda out: (out[0][crop], out[1]))(inner(r, t, mode))  # noqa: E731
    aligned_img, _ = run(_vol(ref, "reference.npy"), target, "off")
    base_psnr, base_ssim = quality(gt, aligned_img)
    zf_psnr, zf_ssim = quality(gt, tar[crop])
    rows = []
    conditions = [(s, 0.0) for s in shifts] + [(0.0, a) for a in angles if a != 0]
    for shift, angle in conditions:
        ref_m = _vol(moved(ref, shift, angle), "reference.npy")
        row = {"shift_px": shift, "angle_deg": angle}
        if shift or angle:  # the true motion undone (B-spline): what is lost outside the FOV + interpolation
            undo = moved(ref_m.data, -shift, 0.0) if not angle else moved(ref_m.data, 0.0, -angle)
            back = _vol(undo, "reference.npy")
            p, s = quality(gt, run(back, target, "off")[0])
            row["oracle"] = {"psnr": p, "delta_psnr": p - base_psnr}
        for mode in ("off", "auto"):
            start = time.perf_counter()
            img, info = run(ref_m, target, mode)
            p, s = quality(gt, img)
            row[mode] = {"psnr": p, "ssim": s, "delta_psnr": p - base_psnr, "delta_ssim": s - base_ssim,
                         "seconds": time.perf_counter() - start, "registration": info["provenance"].get("registration"),
                         "warnings": info["warnings"]}
        rows.append(row)
        print(f"shift {shift:5.1f} px rot {angle:4.1f} deg: off {row['off']['delta_psnr']:+7.3f} dB, "
              f"auto {row['auto']['delta_psnr']:+7.3f} dB, true motion undone "
              f"{row.get('oracle', {}).get('delta_psnr', 0.0):+7.3f} dB  [{row['auto']['registration']}]", flush=True)
    return {"margin_px": margin, "aligned": {"psnr": base_psnr, "ssim": base_ssim},
            "zero_filled": {"psnr": zf_psnr, "ssim": zf_ssim}, "rows": rows}


def calibration(run: Runner, data: dict, shifts: list[float]) -> dict:
    """Sub-pixel shifts on the validation split: leave alone ("off") or correct ("rigid")?"""
    ref, tar, gt = data["reference"], data["target"], data["ground_truth"]
    target = _vol(tar, "target.npy")
    base, _ = quality(gt, run(_vol(ref, "r.npy"), target, "off")[0])
    rows = []
    for shift in shifts:
        ref_m = _vol(moved(ref, shift, 0.0), "r.npy")
        row = {"shift_px": shift}
        for mode in ("off", "rigid"):
            img, info = run(ref_m, target, mode)
            row[mode] = quality(gt, img)[0] - base
            if mode == "rigid":
                row["estimate"] = info["provenance"].get("registration")
        rows.append(row)
        print(f"calibration shift {shift:4.2f} px: off {row['off']:+.3f} dB, rigid {row['rigid']:+.3f} dB", flush=True)
    return {"split": "val", "rows": rows}


# ---------------------------------------------------------------------------------- other grids
def _grid_affine(spacing: float, h_mm: float, w_mm: float, slice_mm: float) -> np.ndarray:
    """Index (row, col, slice) -> RAS mm for pixels of ``spacing`` mm tiling [0, h_mm) x [0, w_mm)."""
    a = np.diag([spacing, spacing, slice_mm, 1.0])
    a[0, 3] = a[1, 3] = spacing / 2
    return a


def _on_grid(ref: np.ndarray, spacing: float, slice_mm: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """The 1 mm reference as a scanner would give it on a ``spacing`` grid of the same field of
    view: the same k-space, cropped (coarser: the detail a bigger pixel cannot hold is gone) or
    zero-padded (finer: no new detail), magnitude. A DFT resampling puts sample j at source pixel
    j * N / M, so both grids start at the first 1 mm pixel's centre and span the same FOV."""
    n, h, w = ref.shape
    hs, ws = int(round(h / spacing)), int(round(w / spacing))
    k = np.fft.fftshift(np.fft.fft2(ref.astype(np.float64)), axes=(-2, -1))
    out = np.zeros((n, hs, ws), np.complex128)
    ch, cw = min(h, hs), min(w, ws)
    src = (slice(None), slice((h - ch) // 2, (h - ch) // 2 + ch), slice((w - cw) // 2, (w - cw) // 2 + cw))
    dst = (slice(None), slice((hs - ch) // 2, (hs - ch) // 2 + ch), slice((ws - cw) // 2, (ws - cw) // 2 + cw))
    out[dst] = k[src]
    img = np.abs(np.fft.ifft2(np.fft.ifftshift(out, axes=(-2, -1)))) * (hs * ws) / (h * w)
    aff = np.diag([h / hs, w / ws, slice_mm, 1.0])
    aff[0, 3] = aff[1, 3] = 0.5  # the centre of the first pixel of _grid_affine(1.0, ...)
    return img.astype(np.float32), aff


def _write_nifti(path: Path, stack: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(stack, 0, -1), np.float32), affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def _write_dicom(folder: Path, stack: np.ndarray, affine: np.ndarray, frame_uid: str, scale: float) -> Path:
    """A classic MR series (uint16) with ImagePositionPatient / PixelSpacing from ``affine``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    series, study = generate_uid(), "1.2.826.0.1.3680043.8.498.1"
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    for i, sl in enumerate(stack):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Sim^Phantom", "SIM0001"
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.Rows, ds.Columns = sl.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        row_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])  # along a row = column index
        col_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row_dir, col_dir])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps[:3, 3] + i * lps[:3, 2])]
        ds.PixelSpacing = [f"{np.linalg.norm(lps[:3, 0]):.6f}", f"{np.linalg.norm(lps[:3, 1]):.6f}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.6f}"
        ds.RescaleSlope, ds.RescaleIntercept = f"{1 / scale:.10g}", "0"
        ds.PixelData = np.clip(np.rint(sl * scale), 0, 65535).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{i:04d}.dcm", enforce_file_format=True)
    return folder


def grid_study(run: Runner, data: dict, spacings: list[float], work: Path) -> dict:
    from sgf_deploy.data.readers import read_volume

    ref, tar, gt = data["reference"], data["target"], data["ground_truth"]
    n, h, w = ref.shape
    target_affine = _grid_affine(1.0, h, w, 3.0)
    scale = 60000.0 / float(max(ref.max(), tar.max()))
    out: dict = {}
    for fmt in ("nifti", "dicom"):
        def write(name: str, stack: np.ndarray, affine: np.ndarray) -> Path:
            if fmt == "nifti":
                return _write_nifti(work / f"{fmt}-{name}.nii.gz", stack, affine)
            return _write_dicom(work / f"{fmt}-{name}", stack, affine, "1.2.826.0.1.3680043.8.498.2", scale)

        if fmt == "dicom":  # slices along the DICOM normal (row x column cosines), so the reader keeps their order
            target_affine = _grid_affine(1.0, h, w, -3.0)
        target = read_volume(write("target", tar, target_affine), role="target")
        same = read_volume(write("ref-1mm", ref, target_affine), role="reference")
        base, base_ssim = quality(gt, run(same, target, "off")[0])
        rows = []
        for spacing in spacings:
            stack, affine = _on_grid(ref, spacing, target_affine[2, 2])
            reference = read_volume(write(f"ref-{spacing:g}mm", stack, affine), role="reference")
            row = {"spacing_mm": spacing, "matrix": list(reference.shape[1:])}
            for mode in ("auto", "off"):
                img, info = run(reference, target, mode)
                p, s = quality(gt, img)
                row[mode] = {"psnr": p, "delta_psnr": p - base, "ssim": s, "delta_ssim": s - base_ssim,
                             "registration": info["provenance"].get("registration"),
                             "resampling": info["provenance"].get("resampling")}
            rows.append(row)
            print(f"{fmt} reference {spacing:g} mm {row['matrix']}: auto {row['auto']['delta_psnr']:+.3f} dB, "
                  f"off {row['off']['delta_psnr']:+.3f} dB vs same grid {base:.2f} dB", flush=True)
        out[fmt] = {"same_grid": {"psnr": base, "ssim": base_ssim}, "rows": rows}
    return out


def timing(data: dict, repeats: int, size: int = 320, stacks: tuple[int, ...] = (1, 8, 16, 32)) -> dict:
    """The simulator's slices brought onto a ``size`` x ``size`` matrix of the same field of view
    (cubic B-spline; the head fills the matrix as on a scanner), reference moved 10 px / 5 deg;
    ``pair_inputs`` with ``register="rigid"`` on stacks of each size in ``stacks`` (what ``run``
    does: the slices' pyramids side by side, one refinement of the stack), 1 and 2 threads.
    Seconds per slice = the registration's wall time / slices; the median of ``repeats`` runs
    (``max(1, repeats // k)`` for a stack of k, at least 2)."""
    from sgf_deploy.geometry import PairSettings, pair_inputs
    from sgf_deploy.geometry.grid import Grid, index_map

    ref, tar = data["reference"], data["target"]
    n, h, w = ref.shape
    src = Grid((n, h, w), _grid_affine(1.0, h, w, 3.0))
    dst = Grid((n, size, size), _grid_affine(1.0, h, w, 3.0) @ np.diag([h / size, w / size, 1.0, 1.0]))
    up = lambda a: resample(a, [index_map(dst, src)], (n, size, size), interpolator="bspline")  # noqa: E731
    tar_p, ref_m = up(tar), moved(up(ref), 10.0, 5.0)
    out: dict = {"size": [size, size], "motion": "10 px along (0.8, 0.6), 5 deg", "stacks": {}}
    for k in (k for k in stacks if k <= n):
        for threads in (1, 2):
            per_slice, cpu, est = [], [], None
            for r in range(max(2, repeats // k)):
                sl = slice((r * k) % (n - k + 1), (r * k) % (n - k + 1) + k)
                c0 = time.process_time()
                paired = pair_inputs(_vol(ref_m[sl], "ref.npy"), _vol(tar_p[sl], "tar.npy"),
                                     PairSettings(register="rigid", threads=threads))
                cpu.append((time.process_time() - c0) / k)
                per_slice.append(paired.registration.seconds / k)
                est = paired.registration
            row = {"median_s_per_slice": statistics.median(per_slice), "min_s": min(per_slice),
                   "max_s": max(per_slice), "cpu_median_s_per_slice": statistics.median(cpu),
                   "runs": len(per_slice), "load_after": loadavg(),
                   "last_estimate": {"shift_px": list(est.shift_px), "angle_deg": est.angle_deg}}
            out["stacks"][f"{k}_slices_{threads}_threads"] = row
            print(f"registration {size}x{size}, stack of {k}, {threads} thread(s): wall median "
                  f"{row['median_s_per_slice']:.3f} s/slice (min {row['min_s']:.3f}, max {row['max_s']:.3f}), "
                  f"CPU {row['cpu_median_s_per_slice']:.3f} s/slice, {len(per_slice)} runs, estimate "
                  f"({est.shift_px[0]:+.2f}, {est.shift_px[1]:+.2f}) px {est.angle_deg:+.2f} deg of (+8, +6) px +5 deg, "
                  f"load {row['load_after']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="test-split slices [32]")
    ap.add_argument("--calib-n", type=int, default=16, help="validation-split slices for the threshold [16]")
    ap.add_argument("--threads", type=int, default=1, help="engine and SimpleITK threads [1]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="lite-recon4x-t1-t2",
                    help="shipped model (or engine) to reconstruct with [the T1->T2 model the tables were measured with]")
    ap.add_argument("--shifts", default="0,2,5,10,20")
    ap.add_argument("--angles", default="0,2,5,10")
    ap.add_argument("--calib-shifts", default="0,0.1,0.25,0.5,1")
    ap.add_argument("--spacings", default="0.5,1.25")
    ap.add_argument("--timing-repeats", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="n=4, shifts 0,5,20, angles 0,10, no calibration")
    ap.add_argument("--margin", type=int, default=24,
                    help="zero margin (px) around the slices in the motion study, so a 20 px move stays in the FOV [24]")
    ap.add_argument("--parts", default="motion,fov,calibration,grids,timing", help="which parts to run")
    ap.add_argument("--out", default=None, help="JSON to write (e.g. benchmarks/results/registration.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.calib_n, args.shifts, args.angles, args.timing_repeats = 4, 0, "0,5,20", "0,10", 4
    floats = lambda s: [float(v) for v in s.split(",") if v.strip()]  # noqa: E731
    started = time.time()
    record: dict = {"command": " ".join(["python", "benchmarks/registration_robustness.py"] + (argv or sys.argv[1:])),
                    "machine": machine_info(), "load_before": loadavg(), "n": args.n, "threads": args.threads,
                    "pair": "t1-t2", "task": "recon4x", "engine": args.engine, "split": "test", "seed": args.seed}
    set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sgf-registration-") as tmp:
        run = Runner(args.threads, Path(tmp) / "no-engines", args.engine)
        parts = set(args.parts.split(","))
        test = simulate("t1-t2", "recon4x", "test", args.n, seed=args.seed)
        if "motion" in parts:
            record["motion"] = motion_study(run, test, floats(args.shifts), floats(args.angles), args.margin)
        if "fov" in parts:  # no margin: the largest shift pushes anatomy out of the reference's FOV
            record["motion_no_margin"] = motion_study(run, test, [max(floats(args.shifts))], [], 0)
        if args.calib_n and "calibration" in parts:
            val = simulate("t1-t2", "recon4x", "val", args.calib_n, seed=args.seed)
            record["calibration"] = calibration(run, val, floats(args.calib_shifts))
        if "grids" in parts:
            record["grids"] = grid_study(run, test, floats(args.spacings), Path(tmp))
        if "timing" in parts:
            record["timing"] = timing(simulate("t1-t2", "recon4x", "test", max(args.n, 32), seed=args.seed)
                                      if "motion" not in parts or args.n < 32 else test, args.timing_repeats)
    record["load_after"] = loadavg()
    record["seconds"] = time.time() - started
    if "motion" in record:
        auto = [r["auto"]["delta_psnr"] for r in record["motion"]["rows"]]
        off = [r["off"]["delta_psnr"] for r in record["motion"]["rows"] if r["shift_px"] or r["angle_deg"]]
        print(f"worst with --register auto: {min(auto):+.3f} dB; without: {min(off, default=0.0):+.3f} dB "
              "(bar: >= -0.2 dB)")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
