"""INT8 calibration sets: normalised, padded (reference, target) pairs on disk.

Layout of ``calibration/<set>/``::

    manifest.json      format, source, n, shapes, sha256 of every file, the pre-processing convention
    0000.npz ...       one pair each: ``reference``, ``target`` float32 (Hp, Wp), normalised per
                       instance and edge-padded bottom/right to a multiple of 8 (exactly what the
                       engine sees, ARCHITECTURE.md); ``mean``, ``std`` (float64 scalars) of the
                       target, for reference

Plain arrays only: every file is read with ``allow_pickle=False`` and checked against the
manifest's sha256 before use.

Sources
    ``sim``  the project's simulator, **train** split (never the test split that validation and
             build-time parity score on), ``pair``/``task``/``seed`` as given.
    ``DIR``  a folder of the user's pairs in the one folder convention of
             :mod:`sgf_deploy.data.pairs` (``pairs.csv``, or files paired by contrast tag /
             role name), its **train** subjects only (:mod:`sgf_deploy.data.splits`: the split
             recorded with ``checkpoint`` when given, else the one ``train --seed`` draws), so
             no test subject that validation scores on is calibrated on; a fully sampled target
             is degraded for ``task`` first, so the set holds what the engine will see. Slices are drawn evenly over all pairs (seeded); slices
             whose target or reference is constant (empty edge slices) are skipped, since
             per-instance normalisation is undefined there.

No torch is imported here.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .. import __version__, contract
from ..artifacts import sha256_bytes, sha256_file, temp_beside, write_bytes_atomic, write_json_atomic
from ..errors import InputError, OutputExistsError

FORMAT = "sgf-deploy-calibration"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_DIR = Path("calibration")
SIZE_MULTIPLE = contract.DEFAULT_SIZE_MULTIPLE
MAX_N = 4096
_PAIR_SUFFIXES = (".npy", ".nii.gz", ".nii", ".h5", ".hdf5", ".dcm", "")


def convention(size_multiple: int = SIZE_MULTIPLE) -> dict[str, Any]:
    """The pre-processing every file of a set went through (same as the runtime's)."""
    return {
        "normalization": "per-instance (x - mean) / (std + 1e-11), std with ddof=1, float64 statistics; "
                         "reference and target each by their own statistics",
        "pad": {"mode": "edge", "sides": "bottom,right", "multiple": int(size_multiple)},
        "arrays": {"reference": "float32 (Hp, Wp)", "target": "float32 (Hp, Wp)",
                   "mean": "float64 () target mean", "std": "float64 () target std"},
        "engine_input": "each array as (1, 1, Hp, Wp)",
    }


def default_set_name(source: str, n: int, pair: str, task: str) -> str:
    if source == "sim":
        return f"{pair}-{task}-sim-n{n}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).resolve().name) or "data"
    return f"{stem}-train-n{n}"


def preprocess_pair(reference: np.ndarray, target: np.ndarray, size_multiple: int = SIZE_MULTIPLE
                    ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """One (H, W) pair -> the engine's inputs by the input contract (:mod:`sgf_deploy.contract`):
    normalised, edge-padded float32 (Hp, Wp) arrays and the target's mean/std."""
    prepared = contract.prepare(reference, target, size_multiple)
    return prepared.reference[0, 0], prepared.target[0, 0], prepared.means[0], prepared.stds[0]


def _usable(ref: np.ndarray, tar: np.ndarray) -> bool:
    return bool(np.isfinite(ref).all() and np.isfinite(tar).all() and np.ptp(ref) > 0 and np.ptp(tar) > 0)


# ----------------------------------------------------------------------------------- sources
def _from_sim(n: int, pair: str, task: str, seed: int) -> tuple[Iterable[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    from ..data.simulator import simulate

    sim = simulate(pair, task, "train", n, seed)
    pairs = [(sim["reference"][i], sim["target"][i]) for i in range(n)]
    return pairs, {"kind": "simulator", "split": "train", "pair": pair, "task": task, "seed": int(seed)}


def _from_dir(folder: Path, n: int, seed: int, task: str, split: Any = None, tags: tuple[str | None, str | None] = (None, None),
              echo: Callable[[str], None] | None = None) -> tuple[Iterable[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Slices drawn evenly (seeded) over the train-split pairs of a user folder
    (:mod:`sgf_deploy.data.pairs`, :mod:`sgf_deploy.data.splits`), each target as the engine sees it
    (degraded for ``task`` when the folder's targets are fully sampled); constant slices are skipped
    (normalisation is undefined there)."""
    from ..data.pairs import load_pair
    from ..data.splits import pairs_for

    if not folder.is_dir():
        raise InputError(f"{folder}: calibration source is neither 'sim' nor a folder")
    chosen_pairs, how = pairs_for(folder, "train", split, seed=seed, ref_tag=tags[0], tar_tag=tags[1])
    if echo:
        echo(f"calibration pairs: {how}")
    pairs = [load_pair(files, task, seed) for files in chosen_pairs]
    index = [(v, s) for v, p in enumerate(pairs) for s in range(len(p.target)) if _usable(p.reference[s], p.target[s])]
    if not index:
        raise InputError(f"{folder}: no usable slices (every slice is constant or non-finite)")
    rng = np.random.default_rng(seed)
    chosen = sorted(index[i] for i in rng.permutation(len(index))[: min(n, len(index))])
    detail = {
        "kind": "folder",
        "folder": str(folder.resolve()),
        "pairs": [[str(p.files.reference.relative_to(folder)), str(p.files.target.relative_to(folder))] for p in pairs],
        "degradation": sorted({p.degradation for p in pairs}),
        "split": "train",
        "subjects": sorted({p.files.subject for p in pairs}),
        "selection": how,
        "slices": [[int(v), int(s)] for v, s in chosen],
        "seed": int(seed),
        "available_slices": len(index),
    }
    return [(pairs[v].reference[s], pairs[v].target[s]) for v, s in chosen], detail


# ------------------------------------------------------------------------------------ writing
def write_calibration_set(
    source: str | os.PathLike = "sim",
    n: int = 64,
    out: str | os.PathLike | None = None,
    *,
    pair: str = "t1-t2",
    task: str = "recon4x",
    seed: int = 0,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    tags: tuple[str | None, str | None] = (None, None),
) -> Path:
    """Write a calibration set (see the module docstring); returns its folder.

    ``source`` is ``"sim"`` or a folder of paired volumes (its train split: the one recorded with
    ``checkpoint``'s ``<checkpoint>.split.json`` when given, else the one drawn with ``seed``;
    ``tags`` = (reference tag, target tag) pair its files, default the recorded ones). ``out`` defaults to
    ``calibration/<pair>-<task>-sim-n<N>`` (``calibration/<folder name>-n<N>`` for a folder).
    The set is assembled in a temporary folder beside ``out`` and renamed into place at the end."""
    n = int(n)
    if not 1 <= n <= MAX_N:
        raise InputError(f"--n must be between 1 and {MAX_N}, got {n}")
    src = str(source)
    out = Path(out) if out is not None else DEFAULT_DIR / default_set_name(src, n, pair, task)
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out}: already exists; pass --force to overwrite it")
        if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
            raise OutputExistsError(f"{out}: exists and is not a calibration set; refusing to overwrite it")
    if src == "sim":
        pairs, detail = _from_sim(n, pair, task, seed)
    else:
        from ..data.splits import recorded_split

        split = recorded_split(checkpoint)
        if checkpoint is not None and split is None:
            raise InputError(f"{checkpoint}: records no subject split (no {Path(str(checkpoint) + '.split.json').name}); "
                             "it was not trained on a folder with 'train --data DIR'")
        pairs, detail = _from_dir(Path(src), n, seed, task, split, tags, echo)
        pairs = list(pairs)
    if echo:  # after the source is read: a refused source prints nothing but its error
        echo(f"calibration set from {'the simulator (train split)' if src == 'sim' else src}: "
             f"{len(pairs)} pairs -> {out}")

    out.parent.mkdir(parents=True, exist_ok=True)
    import shutil

    work = temp_beside(out, directory=True)
    try:
        files: dict[str, str] = {}
        shapes: dict[str, int] = {}
        skipped = 0
        for ref, tar in pairs:
            if not _usable(np.asarray(ref), np.asarray(tar)):
                skipped += 1
                continue
            ref_p, tar_p, mean, std = preprocess_pair(ref, tar)
            name = f"{len(files):04d}.npz"
            buffer = io.BytesIO()
            np.savez(buffer, reference=ref_p, target=tar_p, mean=np.float64(mean), std=np.float64(std))
            data = buffer.getvalue()
            write_bytes_atomic(work / name, data)
            files[name] = sha256_bytes(data)
            key = "x".join(map(str, tar_p.shape))
            shapes[key] = shapes.get(key, 0) + 1
        if not files:
            raise InputError(f"{src}: no usable calibration pairs (all constant or non-finite)")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "toolkit_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": "sim" if src == "sim" else str(Path(src).resolve()),
            "source_detail": detail,
            "n": len(files),
            "requested_n": n,
            "skipped_constant_slices": skipped,
            "shapes": shapes,
            "size_multiple": SIZE_MULTIPLE,
            "convention": convention(),
            "files": files,
        }
        write_json_atomic(work / MANIFEST, manifest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    if echo:
        echo(f"wrote {out}: {len(files)} pairs ({', '.join(f'{k} x{v}' for k, v in shapes.items())}), manifest.json with sha256 of each")
    return out


# ------------------------------------------------------------------------------------ reading
class CalibrationSet:
    """A calibration set on disk, checked against its manifest when opened."""

    def __init__(self, folder: str | os.PathLike, verify: bool = True) -> None:
        self.folder = Path(folder)
        manifest_file = self.folder / MANIFEST
        if not manifest_file.is_file():
            raise InputError(
                f"{self.folder}: not a calibration set (no {MANIFEST}); make one with: sgf-deploy calibrate --from sim --n 64"
            )
        try:
            self.manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{manifest_file}: unreadable calibration manifest ({str(exc)[:120]})") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise InputError(f"{manifest_file}: not an sgf-deploy calibration manifest")
        files = self.manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise InputError(f"{manifest_file}: lists no files")
        self.files = sorted(files)
        for name in self.files:
            if Path(name).name != name or not name.endswith(".npz"):
                raise InputError(f"{manifest_file}: bad file name {name!r}")
            path = self.folder / name
            if not path.is_file():
                raise InputError(f"{path}: listed in the calibration manifest but missing")
            if verify and sha256_file(path) != files[name]:
                raise InputError(f"{path}: sha256 does not match the calibration manifest (file changed or corrupt)")
        self.manifest_sha256 = sha256_file(manifest_file)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(reference, target) float32 (Hp, Wp) of pair ``index``, checked."""
        path = self.folder / self.files[index]
        try:
            with np.load(path, allow_pickle=False) as data:
                ref = np.asarray(data["reference"])
                tar = np.asarray(data["target"])
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: unreadable calibration pair ({str(exc)[:120]})") from None
        if ref.dtype != np.float32 or tar.dtype != np.float32 or ref.ndim != 2 or ref.shape != tar.shape:
            raise InputError(f"{path}: expected two float32 (H, W) arrays of one shape; got {ref.dtype} {ref.shape}, {tar.dtype} {tar.shape}")
        if not (np.isfinite(ref).all() and np.isfinite(tar).all()):
            raise InputError(f"{path}: non-finite values in a calibration pair")
        return ref, tar

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.folder),
            "manifest_sha256": self.manifest_sha256,
            "n": len(self),
            "source": self.manifest.get("source"),
            "source_detail": {k: v for k, v in (self.manifest.get("source_detail") or {}).items() if k not in ("slices",)},
            "shapes": self.manifest.get("shapes"),
        }


def list_calibration_sets(folder: str | os.PathLike = DEFAULT_DIR) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def calibrate_command_hint(pair: str | None = None, task: str | None = None, n: int = 64) -> str:
    """The exact command that makes a calibration set for a model of ``pair``/``task``."""
    parts = ["sgf-deploy calibrate --from sim"]
    if pair:
        parts.append(f"--pair {pair}")
    if task:
        parts.append(f"--task {task}")
    parts.append(f"--n {n}")
    return " ".join(parts)


def find_calibration_set(calib: str | os.PathLike | None, *, folder: str | os.PathLike = DEFAULT_DIR,
                         pair: str | None = None, task: str | None = None) -> Path:
    """The calibration set to use: ``calib`` if given, else the only set in ``folder``. Errors say
    how to make one (the exact ``sgf-deploy calibrate`` command) or how to choose."""
    if calib is not None:
        path = Path(calib)
        if not path.is_dir():
            raise InputError(f"{path}: calibration set not found; make one with: {calibrate_command_hint(pair, task)} --out {path}")
        return path
    sets = list_calibration_sets(folder)
    if not sets:
        raise InputError(
            f"INT8 needs a calibration set and {folder}/ has none (scales are never guessed); make one with: "
            f"{calibrate_command_hint(pair, task)}   (or pass --calib DIR)"
        )
    if len(sets) > 1:
        raise InputError(f"{folder}/ holds {len(sets)} calibration sets ({', '.join(p.name for p in sets)}); choose one with --calib")
    return sets[0]
