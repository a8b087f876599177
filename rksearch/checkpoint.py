"""One file per trial, ``checkpoint.pt``: everything needed to continue at the next epoch.

Only tensors and plain Python values go in, so the file loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling of files from shared storage).
The random states of Python, NumPy and torch (CPU and every CUDA device) are saved with
it: together with the epoch-seeded batch order, a resumed trial replays exactly the
random draws (dropout, augmentation) an uninterrupted one makes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def rng_state() -> dict[str, Any]:
    """Random states of Python, NumPy and torch in weights_only-loadable form."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, state: dict[str, Any]) -> Path:
    """Write ``directory/checkpoint.pt`` atomically (a crash mid-write leaves the old one)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load(directory: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read ``directory/checkpoint.pt`` (weights_only) and check its format."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {directory} to resume from")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT}")
    return state
