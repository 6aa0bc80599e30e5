"""A small fastMRI/M4Raw-layout folder of paired knee-like scans for the own-data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _phantom(rng: np.random.Generator, size: int, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """(PD, PD-FS) float32 (slices, size, size): ellipses of 'fat' and 'tissue' with a smooth field;
    fat is bright in PD and suppressed in PD-FS."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    pd, fs = [], []
    cy, cx = rng.uniform(-0.05, 0.05, 2)
    for z in range(slices):
        r = 0.38 - 0.03 * z
        body = ((yy - cy) / r) ** 2 + ((xx - cx) / (0.8 * r)) ** 2 < 1
        fat = body & ((((yy - cy) / r) ** 2 + ((xx - cx) / (0.8 * r)) ** 2) > 0.6)
        bone = ((yy - cy - 0.05) / 0.1) ** 2 + ((xx - cx) / 0.12) ** 2 < 1
        texture = 0.05 * np.sin(40 * xx + 7 * z) * np.cos(31 * yy)
        field = 1 + 0.2 * xx
        pd.append(field * (0.7 * body + 0.3 * fat - 0.4 * bone + texture * body))
        fs.append(field * (0.6 * body - 0.5 * fat - 0.3 * bone + 1.5 * texture * body))
    return (np.clip(np.stack(pd), 0, None).astype(np.float32) * 100,
            np.clip(np.stack(fs), 0, None).astype(np.float32) * 100)


def _kspace(images: np.ndarray, coils: int = 2) -> np.ndarray:
    """Multi-coil k-space (slices, coils, H, W) complex64 of ``images`` (smooth coil maps)."""
    n, h, w = images.shape
    yy = np.linspace(-1, 1, h)[:, None]
    maps = [np.exp(-((yy - c) ** 2)) * np.ones((1, w)) for c in np.linspace(-0.5, 0.5, coils)]
    coil_images = images[:, None] * np.stack(maps)[None]
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil_images, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return k.astype(np.complex64)


def make_fastmri_folder(folder: Path, subjects: int = 6, slices: int = 3, size: int = 32,
                        kspace_subjects: int = 1, seed: int = 0) -> Path:
    """``knee<NN>_PD.h5`` / ``knee<NN>_PDFS.h5`` pairs (``reconstruction_rss``); the last
    ``kspace_subjects`` subjects are k-space-only multi-coil pairs (``kspace`` only)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(subjects):
        pd, fs = _phantom(rng, size, slices)
        for tag, img in (("PD", pd), ("PDFS", fs)):
            with h5py.File(folder / f"knee{i:02d}_{tag}.h5", "w") as f:
                if i >= subjects - kspace_subjects:
                    f.create_dataset("kspace", data=_kspace(img))
                else:
                    f.create_dataset("reconstruction_rss", data=img)
                f.attrs["acquisition"] = "CORPD_FBK" if tag == "PD" else "CORPDFS_FBK"
                f.attrs["max"] = float(img.max())
    return folder
