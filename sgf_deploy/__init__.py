"""sgf-deploy: SGF-MRI from PyTorch training code to a validated engine.

Importing the package imports neither torch nor any inference backend; each stage imports its
heavy dependencies when used, so the scanner-side runtime stays numpy + one backend.
"""

__version__ = "0.1.0"
