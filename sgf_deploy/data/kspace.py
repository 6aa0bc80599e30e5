"""Centred orthonormal 2-D FFTs and root-sum-of-squares coil combination (fastMRI conventions).

``fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two axes, so the DC
coefficient sits at index ``(H // 2, W // 2)`` for even and odd sizes alike and the transform is
unitary (Parseval holds; zero-padding k-space on the full grid keeps the image scale). Leading axes
(slices, coils, batch) are carried through. float32/complex64 inputs give complex64 outputs;
float64/complex128 give complex128.
"""

from __future__ import annotations

import numpy as np

_AXES = (-2, -1)


def _as_complex(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"expected an array with at least 2 dimensions, got shape {x.shape}")
    dtype = np.complex128 if x.dtype in (np.float64, np.complex128) else np.complex64
    return x.astype(dtype, copy=False)


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes (image -> k-space)."""
    x = _as_complex(x)
    k = np.fft.fft2(np.fft.ifftshift(x, axes=_AXES), axes=_AXES, norm="ortho")
    return np.fft.fftshift(k, axes=_AXES).astype(x.dtype, copy=False)


def ifft2c(k: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2-D FFT over the last two axes (k-space -> image)."""
    k = _as_complex(k)
    x = np.fft.ifft2(np.fft.ifftshift(k, axes=_AXES), axes=_AXES, norm="ortho")
    return np.fft.fftshift(x, axes=_AXES).astype(k.dtype, copy=False)


def rss(coil_images: np.ndarray, axis: int = 0) -> np.ndarray:
    """Root-sum-of-squares of magnitudes along ``axis`` (the coil axis); float32 for single
    precision inputs, float64 for double."""
    x = np.asarray(coil_images)
    real = np.float64 if x.dtype in (np.float64, np.complex128) else np.float32
    mag = np.abs(x).astype(real, copy=False)
    return np.sqrt(np.sum(mag * mag, axis=axis)).astype(real, copy=False)
