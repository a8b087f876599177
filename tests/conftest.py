"""Shared test set-up: make tests/ importable (spec generator) and keep torch to one thread."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(1)
