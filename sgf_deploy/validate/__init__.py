"""Validation: parity of an engine against the PyTorch reference (metrics, statistics, gates)."""
