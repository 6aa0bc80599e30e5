import numpy as np
import pytest

from sgf_deploy.data.kspace import fft2c, ifft2c, rss


def _centred_dft_matrix(n: int) -> np.ndarray:
    # fftshift(fft(ifftshift(x))) with norm="ortho" is the DFT with both indices centred on n // 2
    idx = np.arange(n) - n // 2
    return np.exp(-2j * np.pi * np.outer(idx, idx) / n) / np.sqrt(n)


@pytest.mark.parametrize("shape", [(6, 5), (7, 8), (9, 9), (233, 197)])
def test_matches_explicit_centred_dft(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    fh, fw = _centred_dft_matrix(shape[0]), _centred_dft_matrix(shape[1])
    expected = fh @ x @ fw.T
    np.testing.assert_allclose(fft2c(x), expected, atol=1e-9)
    np.testing.assert_allclose(ifft2c(expected), x, atol=1e-9)


def test_matches_fastmri_torch_definition():
    torch = pytest.importorskip("torch", reason="the fastMRI reference definition is written in torch")
    # fastmri.fft2c on a (..., H, W, 2) real tensor, as in fastmri 0.3.0
    def fastmri_fft2c(data):
        data = torch.fft.ifftshift(data, dim=[-3, -2])
        data = torch.view_as_real(torch.fft.fftn(torch.view_as_complex(data), dim=(-2, -1), norm="ortho"))
        return torch.fft.fftshift(data, dim=[-3, -2])

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 10, 7)) + 1j * rng.standard_normal((3, 10, 7))).astype(np.complex64)
    ref = torch.view_as_complex(fastmri_fft2c(torch.view_as_real(torch.from_numpy(x)).contiguous())).numpy()
    np.testing.assert_allclose(fft2c(x), ref, atol=1e-5)


def test_round_trip_parseval_and_leading_dims():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 3, 16, 11)) + 1j * rng.standard_normal((2, 3, 16, 11))).astype(np.complex64)
    k = fft2c(x)
    assert k.dtype == np.complex64 and k.shape == x.shape
    np.testing.assert_allclose(ifft2c(k), x, atol=1e-5)
    np.testing.assert_allclose(np.sum(np.abs(k) ** 2), np.sum(np.abs(x) ** 2), rtol=1e-5)
    np.testing.assert_allclose(k[1, 2], fft2c(x[1, 2]), atol=1e-5)


def test_dtypes_and_dc_position():
    img = np.full((7, 6), 2.0, np.float32)
    k = fft2c(img)
    assert k.dtype == np.complex64
    assert fft2c(img.astype(np.float64)).dtype == np.complex128
    assert np.isclose(k[7 // 2, 6 // 2], 2.0 * np.sqrt(42), atol=1e-5)
    k[7 // 2, 6 // 2] = 0
    assert np.abs(k).max() < 1e-5


def test_rss():
    coils = np.zeros((2, 3, 4), np.complex64)
    coils[0] = 3.0
    coils[1] = 4.0j
    out = rss(coils, axis=0)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_allclose(out, 5.0)
    np.testing.assert_allclose(rss(np.moveaxis(coils, 0, -1), axis=-1), 5.0)
