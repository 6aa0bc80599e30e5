"""Every default in one place: the settings dataclasses and the click commands both read these.

Changing a default here changes it for the library call and for the command line at once (the
way Torch-TensorRT keeps ``_defaults.py`` beside ``_settings.py``).
"""

from __future__ import annotations

from pathlib import Path

# -- the workspace (the working directory) --------------------------------------------------------
EXPORT_DIR = Path("export")
CALIBRATION_DIR = Path("calibration")
ENGINES_DIR = Path("engines")
REPORTS_DIR = Path("reports")

# -- model and data -------------------------------------------------------------------------------
PRESET = "lite"
TASK = "recon4x"
PAIR = "t1-t2"
DATA = "sim"  # "sim" (the simulator) or a folder of the user's paired files
SEED = 0
REF_TAG = "T1"  # contrast tags pairing a user's files (fastMRI / M4Raw layout)
TAR_TAG = "T2"

# -- build ----------------------------------------------------------------------------------------
BACKEND = "auto"
PRECISION = "fp32"
CALIB_METHOD = "entropy"
QUANTIZER = "ort"
INT8_ACTIVATIONS = "auto"
MCNS = "function"
BUILD_PARITY_N = 4  # held-out slices for the build-time PSNR vs PyTorch (0: skip)

# -- calibrate ------------------------------------------------------------------------------------
CALIBRATION_N = 64

# -- validate -------------------------------------------------------------------------------------
VALIDATE_SIM_N = 32  # slices of the simulator's test split; a user's folder: all of its test split

# -- run ------------------------------------------------------------------------------------------
RUN_BATCH = 4  # slices per engine call when the engine records no optimum

# -- train / evaluate -----------------------------------------------------------------------------
TRAIN_STEPS = 2000
TRAIN_BATCH = 4
TRAIN_CROP = 128
TRAIN_LR = 2e-4
TRAIN_VAL_EVERY = 250
TRAIN_VAL_N = 16
TRAIN_POOL = 512
EVALUATE_N = 64
