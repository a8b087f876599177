"""Baselines for Figure-4-style comparisons (rkcnn.md section 8). Registered on import."""
