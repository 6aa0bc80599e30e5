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
REGISTER = "auto"  # reference vs target: "auto" (correct above a threshold), "rigid" (always), "off"
# sgf_deploy.geometry: rigid Mattes-MI registration of the reference, slice by slice (thresholds
# calibrated by benchmarks/registration_robustness.py on the simulator's validation split)
REGISTER_MODES = ("auto", "rigid", "off")
REGISTER_AUTO_SHIFT_PX = 0.15  # auto corrects when the stack's shift exceeds this (pixels) ...
REGISTER_AUTO_ANGLE_DEG = 0.15  # ... or its rotation exceeds this (degrees): above the estimator's
# noise on aligned data (the largest of 5 aligned 32-slice stacks: 0.108 px, 0.07 deg), where a
# correction that is noise costs 0.04-0.08 dB of interpolation (benchmarks/README.md, "Calibrating auto")
REGISTER_OUTLIER_PX = 2.0  # a slice further than this from the stack's median estimate: residual warning
REGISTER_OUTLIER_DEG = 2.0
REGISTER_BINS = 32
REGISTER_SAMPLES = (6000, 6000, 10000)  # metric samples per pyramid level (all pixels where fewer)
REGISTER_ITERATIONS = 100  # per pyramid level; reaching it = "did not converge"
REGISTER_STEP_MM = 4.0  # first step; 2 mm under-rotated some slices at 10 degrees
REGISTER_MIN_STEP_MM = 0.01
REGISTER_RELAXATION = 0.8
REGISTER_SHRINK = (4, 2, 1)  # the pyramid (capture range); then a full-resolution refinement on every pixel
REGISTER_SMOOTHING = (2.0, 1.0, 0.0)  # pixels (without the last level, 10 degrees came out as 9.76)
REGISTER_REFINE_SLICES = 12  # a stack refines this many of its slices (evenly spread; all when fewer) ...
# ... and takes the median of those: the refinement is ~2/3 of a slice's time, and the pyramid's
# estimates (every slice) suffice to find the slices that disagree
REGISTER_REFINE_BINS = 64  # last stage: full resolution, every pixel
REGISTER_REFINE_STEPS_MM = (1.0, 0.005)  # the refinement's first and last step on slices under REGISTER_AUTO_MIN_SIDE
REGISTER_REFINE_STEPS_LARGE_MM = (0.5, 0.02)  # ... on larger ones: 18 iterations instead of 27 per slice and as
# accurate there (benchmarks/README.md, "One-slice `run` under 1 s"); a small image's coarse pyramid
# leaves more than 0.5 mm to correct (96x96 phantom: 7 deg came out 7.52 with it, 6.92 without)
REGISTER_REFINE_SAMPLING = 1.0  # fraction of pixels (regular grid) the last stage uses
REGISTER_REFINE_SHRINK = 1  # the last stage's resolution (1: full)
REGISTER_MIN_PIXELS = 64  # fewer foreground pixels: the slice is not registered
# "auto" applies an estimate only on slices at least this large: the thresholds above were
# calibrated on 197x233..320x320 slices; on small images (a 32x40 test phantom: +1.76 deg on an
# aligned pair) the estimator's scatter exceeds them. "rigid" still applies it.
REGISTER_AUTO_MIN_SIDE = 128
REGISTER_BESIDE_MAX_SLICES = 4  # auto on a stack this short: register beside a first inference on the
# unregistered reference, redone only when the registration is applied (a one-slice run waited ~0.6 s
# for a registration that is almost never applied; a long stack would waste a whole inference)
RESAMPLE_INTERPOLATOR = "bspline"  # cubic: linear blurs the reference by ~0.8 dB of output after a 6-degree rotation

# -- serving on Triton (sgf_deploy.serving) -------------------------------------------------------
TRITON_MODEL = "sgf_mri"  # the model name clients address
TRITON_LAYOUT = "python"  # "python" (runs on any Triton, the bundled one included) | "native"
TRITON_MAX_BATCH = 16  # slices per batch when the engine's profile does not bound it
TRITON_QUEUE_DELAY_US = 2000  # dynamic batcher: how long a request may wait for others
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
TRITON_READY_TIMEOUT_S = 120.0  # triton serve: wait this long for the model to load
TRITON_TIMEOUT_S = 120.0  # run --server: one request's network timeout
TRITON_RETRIES = 3  # run --server: attempts per request when the server is unreachable or restarting

# -- the DICOM node (sgf_deploy.dicom) ------------------------------------------------------------
DICOM_PORT = 11112
DICOM_AE_TITLE = "SGF_DEPLOY"
DICOM_SPOOL = Path("dicom-spool")
DICOM_REF_MATCH = r"t1"  # regex on SeriesDescription / ProtocolName, case-insensitive
DICOM_TARGET_MATCH = r"t2"
DICOM_SETTLE_S = 10.0  # a series is complete after this long without a new instance
DICOM_PAIR_TIMEOUT_S = 600.0  # a complete target with no reference in its study after this: failed
DICOM_RETRY_MIN_S = 2.0  # forwarding back-off: doubles from this ...
DICOM_RETRY_MAX_S = 60.0  # ... up to this, and keeps retrying
DICOM_POLL_S = 0.25  # how often the scheduler, worker and forwarder look at the journal

# -- train / evaluate -----------------------------------------------------------------------------
TRAIN_STEPS = 2000
TRAIN_BATCH = 4
TRAIN_CROP = 128
TRAIN_LR = 2e-4
TRAIN_VAL_EVERY = 250
TRAIN_VAL_N = 16
TRAIN_POOL = 512
EVALUATE_N = 64

# -- tune (sgf-deploy tune: the engine's measured optimum batch x threads, sgf_deploy.bench.tuning) --
TUNE_BATCHES = (1, 2, 4, 8)  # batches timed; threads: 1, 2, 4, ... up to and including the core count
TUNE_REPEATS = 5  # timed calls per batch x threads (after one warm-up); the median counts
TUNE_SHAPE = (320, 320)  # slice size timed when the engine has no fixed H x W
