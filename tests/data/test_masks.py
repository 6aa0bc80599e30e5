import numpy as np
import pytest

from sgf_deploy.data.masks import ACCELERATIONS, acceleration_of, column_mask


@pytest.mark.parametrize("num_cols", [197, 368])
@pytest.mark.parametrize("acc", [4, 8])
def test_random_mask_mean_acceleration(num_cols, acc):
    fractions = [column_mask(num_cols, acc, rng=np.random.default_rng(s)).mean() for s in range(400)]
    assert abs(1.0 / np.mean(fractions) - acc) / acc < 0.03


@pytest.mark.parametrize("num_cols", [197, 320, 368])
@pytest.mark.parametrize("acc", [4, 8])
@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_centre_fully_sampled(num_cols, acc, kind):
    mask = column_mask(num_cols, acc, kind=kind, rng=np.random.default_rng(3))
    assert mask.shape == (num_cols,) and mask.dtype == bool
    num_low = round(num_cols * ACCELERATIONS[acc])
    pad = (num_cols - num_low + 1) // 2
    assert mask[pad : pad + num_low].all()
    assert pad <= num_cols // 2 < pad + num_low  # contains fft2c's DC column


@pytest.mark.parametrize("num_cols", [197, 320, 368])
@pytest.mark.parametrize("acc", [4, 8])
def test_equispaced_acceleration_and_spacing(num_cols, acc):
    for seed in range(10):
        mask = column_mask(num_cols, acc, kind="equispaced", rng=np.random.default_rng(seed))
        assert abs(acceleration_of(mask) - acc) / acc < 0.08
        num_low = round(num_cols * ACCELERATIONS[acc])
        adjusted = acc * (num_low - num_cols) / (num_low * acc - num_cols)
        pad = (num_cols - num_low + 1) // 2
        outer = np.flatnonzero(mask[:pad])
        gaps = np.diff(outer)
        assert gaps.min() >= np.floor(adjusted) and gaps.max() <= np.ceil(adjusted)


def test_seeded_and_varies():
    a = column_mask(197, 4, rng=np.random.default_rng(5))
    b = column_mask(197, 4, rng=np.random.default_rng(5))
    c = column_mask(197, 4, rng=np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(column_mask(197, 4), column_mask(197, 4))  # rng=None is reproducible


def test_acceleration_of_and_errors():
    assert acceleration_of(np.array([1, 0, 0, 0], bool)) == 4.0
    assert acceleration_of(np.zeros(4, bool)) == float("inf")
    with pytest.raises(ValueError):
        column_mask(197, 4, kind="radial")
    with pytest.raises(ValueError):
        column_mask(197, 0)
