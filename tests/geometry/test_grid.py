import numpy as np
from helpers import affine, volume

from sgf_deploy.geometry import Grid, grid_of, index_map, overlap_fraction, same_grid, supersampling


def test_grid_of_reads_the_affine_or_assumes_a_unit_grid():
    g = grid_of(volume(np.zeros((3, 4, 5)), affine((0.5, 0.7, 3.0))))
    assert g.known and g.shape == (3, 4, 5)
    assert np.allclose(g.spacing, (0.5, 0.7, 3.0))
    npy = grid_of(volume(np.zeros((3, 4, 5))))
    assert not npy.known and np.array_equal(npy.affine, np.eye(4))
    assert "no geometry" in npy.describe()


def test_index_map_follows_world_coordinates():
    ref = Grid((10, 40, 50), affine((1.0, 1.0, 1.0)))
    tar = Grid((2, 20, 25), affine((2.0, 2.0, 3.0), origin=(4.0, 6.0, 2.0)))
    m = index_map(tar, ref)
    # target voxel (c=3, r=5, s=1) sits at world x = 4 + 2*5, y = 6 + 2*3, z = 2 + 3*1
    c, r, s = (m @ np.array([3, 5, 1, 1.0]))[:3]
    assert np.allclose((r, c, s), (14.0, 12.0, 5.0))
    assert tar.index_to_world(np.array([3, 5, 1])).tolist() == [14.0, 12.0, 5.0]


def test_same_grid_and_overlap():
    a = Grid((2, 8, 9), affine())
    assert same_grid(a, Grid((2, 8, 9), affine()))
    assert not same_grid(a, Grid((2, 8, 9), affine(origin=(0.5, 0, 0))))
    assert not same_grid(a, Grid((2, 8, 10), affine()))
    assert overlap_fraction(a, a) == 1.0
    assert overlap_fraction(Grid((2, 8, 9), affine(origin=(100.0, 0, 0))), a) == 0.0
    half = overlap_fraction(Grid((2, 8, 9), affine(origin=(4.0, 0, 0))), a)
    assert 0.3 < half < 0.7


def test_supersampling_counts_reference_voxels_per_target_voxel():
    thin = Grid((30, 40, 40), affine((1.0, 1.0, 1.0)))
    slab = Grid((8, 20, 20), affine((2.0, 2.0, 3.0)))
    assert supersampling(slab, thin) == (2, 2, 3)  # (column, row, slice)
    assert supersampling(thin, slab) == (1, 1, 1)
