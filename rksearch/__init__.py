"""rksearch: architecture search and ablation studies over Runge-Kutta CNNs.

``rksearch.run_study(...)`` runs a study from Python (`rksearch.api`); it is imported on first
use, so ``import rksearch`` stays cheap (no torch, no Ray) for the command line and the readers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "run_study"]


def __getattr__(name: str) -> Any:
    if name == "run_study":
        from rksearch.api import run_study

        return run_study
    raise AttributeError(f"module 'rksearch' has no attribute {name!r}")
