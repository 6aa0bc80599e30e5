import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="HDF5 reading needs h5py")

from sgf_deploy.data.degrade import low_resolution, undersample_kspace  # noqa: E402
from sgf_deploy.data.fastmri_pairs import H5PairSource, read_h5_image  # noqa: E402
from sgf_deploy.data.pairs import find_pairs as find_pair_files  # noqa: E402


def find_pairs(folder, ref_tag=None, tar_tag=None):
    return [(p.reference, p.target) for p in find_pair_files(folder, ref_tag, tar_tag)]
from sgf_deploy.data.kspace import fft2c, ifft2c, rss  # noqa: E402
from sgf_deploy.data.simulator import Example  # noqa: E402
from sgf_deploy.errors import InputError  # noqa: E402


def _images(n=3, h=16, w=12, seed=0):
    return np.random.default_rng(seed).random((n, h, w)).astype(np.float32) + 0.1


def _kspace(n=3, coils=4, h=16, w=12, seed=1):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, coils, h, w)) + 1j * rng.standard_normal((n, coils, h, w))
    return fft2c(img.astype(np.complex64))


def _write(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


def test_reads_reconstruction_rss_and_prefers_it(tmp_path):
    imgs = _images()
    p = _write(tmp_path / "a.h5", reconstruction_rss=imgs, kspace=_kspace())
    out = read_h5_image(p)
    assert out.dtype == np.float32 and out.shape == (3, 16, 12)
    np.testing.assert_array_equal(out, imgs)
    p2 = _write(tmp_path / "b.h5", reconstruction_esc=imgs[:, ::-1])
    np.testing.assert_array_equal(read_h5_image(p2), imgs[:, ::-1])


def test_reads_multicoil_and_singlecoil_kspace(tmp_path):
    k = _kspace()
    out = read_h5_image(_write(tmp_path / "mc.h5", kspace=k))
    expected = np.stack([rss(ifft2c(k[i]), axis=0) for i in range(3)])
    assert out.shape == (3, 16, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(out, np.sqrt((np.abs(ifft2c(k)) ** 2).sum(1)), rtol=1e-4)
    sc = read_h5_image(_write(tmp_path / "sc.h5", kspace=k[:, 0]))
    np.testing.assert_allclose(sc, np.abs(ifft2c(k[:, 0])), rtol=1e-5)
    np.testing.assert_allclose(read_h5_image(tmp_path / "mc.h5", key="kspace"), out)


def test_reader_errors_name_the_file(tmp_path):
    cases = {
        "nokeys.h5": {"other": np.zeros((2, 4, 4), np.float32)},
        "badk.h5": {"kspace": np.zeros((4, 4), np.complex64)},
        "realk.h5": {"kspace": np.zeros((2, 4, 4), np.float32)},
        "badimg.h5": {"reconstruction_rss": np.zeros((1, 2, 4, 4), np.float32)},
    }
    for name, data in cases.items():
        with pytest.raises(InputError, match=name):
            read_h5_image(_write(tmp_path / name, **data))
    with pytest.raises(InputError, match="nokeys.h5"):
        read_h5_image(tmp_path / "nokeys.h5", key="reconstruction_rss")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="junk.h5"):
        read_h5_image(tmp_path / "junk.h5")
    with pytest.raises(InputError, match="missing.h5"):
        read_h5_image(tmp_path / "missing.h5")
    nan = _images()
    nan[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        read_h5_image(_write(tmp_path / "nan.h5", reconstruction_rss=nan))


def test_find_pairs(tmp_path):
    for name in ["2022061003_T101.h5", "2022061003_T201.h5", "2022061003_T102.h5", "2022061003_FLAIR01.h5",
                 "2022061004_T101.h5", "sub01_T1.h5", "sub01_T2.h5", "sub02_T1w.h5", "sub02_T2w.h5"]:
        _write(tmp_path / name, reconstruction_rss=_images(1))
    (tmp_path / "nested").mkdir()
    _write(tmp_path / "nested" / "x_T1.h5", reconstruction_rss=_images(1))
    _write(tmp_path / "nested" / "x_T2.h5", reconstruction_rss=_images(1))
    names = [(a.name, b.name) for a, b in find_pairs(tmp_path)]
    assert sorted(names) == sorted([
        ("2022061003_T101.h5", "2022061003_T201.h5"), ("sub01_T1.h5", "sub01_T2.h5"), ("x_T1.h5", "x_T2.h5"),
    ])
    flair = [(a.name, b.name) for a, b in find_pairs(tmp_path, "T1", "FLAIR")]
    assert flair == [("2022061003_T101.h5", "2022061003_FLAIR01.h5")]
    assert [(a.name, b.name) for a, b in find_pairs(tmp_path, "T1w", "T2w")] == [("sub02_T1w.h5", "sub02_T2w.h5")]
    with pytest.raises(InputError, match="no pairs"):
        find_pairs(tmp_path, "PD", "T2")
    with pytest.raises(InputError):
        find_pairs(tmp_path / "nope")


def test_pair_source_image_files_sr(tmp_path):
    ref, tar = _images(4, seed=2), _images(4, seed=3)
    pairs = [(_write(tmp_path / "s_T1.h5", reconstruction_rss=ref), _write(tmp_path / "s_T2.h5", reconstruction_rss=tar))]
    src = H5PairSource(pairs, "sr2x", seed=1)
    ex = next(src)
    assert isinstance(ex, Example) and ex.mask is None and ex.subject == 0
    np.testing.assert_array_equal(ex.reference, ref[ex.slice_index])
    np.testing.assert_array_equal(ex.ground_truth, tar[ex.slice_index])
    np.testing.assert_allclose(ex.target, low_resolution(tar[ex.slice_index], 2))
    again = next(H5PairSource(pairs, "sr2x", seed=1))
    np.testing.assert_array_equal(again.target, ex.target)
    recon = next(H5PairSource(pairs, "recon4x", seed=1))  # no k-space: undersample the image
    assert recon.mask is not None and not np.array_equal(recon.target, recon.ground_truth)


def test_pair_source_undersamples_target_kspace(tmp_path):
    ref, k = _images(3, 20, 12), _kspace(3, 4, 20, 12)
    rss_img = np.stack([rss(ifft2c(k[i]), axis=0) for i in range(3)])
    pairs = [(_write(tmp_path / "m_T1.h5", reconstruction_rss=ref),
              _write(tmp_path / "m_T2.h5", kspace=k, reconstruction_rss=rss_img))]
    ex = next(H5PairSource(pairs, "recon8x", seed=4))
    i = ex.slice_index
    assert ex.mask.shape == (12,)
    np.testing.assert_allclose(ex.ground_truth, rss_img[i], rtol=1e-5)
    np.testing.assert_allclose(ex.target, undersample_kspace(k[i], ex.mask), rtol=1e-5)


def test_pair_source_crops_larger_kspace_grid(tmp_path):
    # fastMRI: reconstruction_rss is the centre crop of the (oversampled) k-space image
    ref, k = _images(2, 16, 12), _kspace(2, 2, 24, 12)
    pairs = [(_write(tmp_path / "c_T1.h5", reconstruction_rss=ref), _write(tmp_path / "c_T2.h5", kspace=k))]
    ex = next(H5PairSource(pairs, "recon4x", seed=0))
    full = rss(ifft2c(k[ex.slice_index]), axis=0)
    assert ex.target.shape == ex.ground_truth.shape == (16, 12)
    np.testing.assert_allclose(ex.ground_truth, full[4:20], rtol=1e-5)


def test_pair_source_mismatch_errors(tmp_path):
    a = _write(tmp_path / "a_T1.h5", reconstruction_rss=_images(3))
    b = _write(tmp_path / "a_T2.h5", reconstruction_rss=_images(4))
    c = _write(tmp_path / "b_T2.h5", reconstruction_rss=_images(3, 16, 10))
    with pytest.raises(InputError, match=r"a_T1\.h5.*a_T2\.h5.*slice counts"):
        H5PairSource([(a, b)], "sr2x")
    with pytest.raises(InputError, match=r"a_T1\.h5.*b_T2\.h5.*sizes"):
        H5PairSource([(a, c)], "recon4x")
    with pytest.raises(InputError):
        H5PairSource([(a, b)], "sr3x")
