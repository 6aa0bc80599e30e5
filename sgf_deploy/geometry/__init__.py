"""Series geometry: the reference brought onto the target's voxel grid (torch-free).

* :mod:`~sgf_deploy.geometry.grid`: a volume's world geometry (4x4 affine), index maps, overlap;
* :mod:`~sgf_deploy.geometry.resample`: SimpleITK resampling onto the target grid, averaged over
  the target voxel where the reference is finer;
* :mod:`~sgf_deploy.geometry.register`: rigid Mattes mutual-information registration per slice;
* :mod:`~sgf_deploy.geometry.pair`: :func:`pair_inputs`, the runtime's pairing step.
"""

from .grid import Grid, grid_of, index_map, overlap_fraction, same_grid, supersampling
from .pair import PairedInputs, PairSettings, Registration, frame_of_reference, pair_inputs
from .register import SliceEstimate, register_slice, rigid_index_matrix
from .resample import resample

__all__ = [
    "Grid", "PairSettings", "PairedInputs", "Registration", "SliceEstimate", "frame_of_reference", "grid_of",
    "index_map", "overlap_fraction", "pair_inputs", "register_slice", "resample", "rigid_index_matrix",
    "same_grid", "supersampling",
]
