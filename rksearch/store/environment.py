"""What a study ran on, stored with it so a result can be explained a year later.

Versions come from package metadata (no imports of Ray or Optuna just to read a version); the
devices from torch, which every study imports anyway.  Nothing here reads the environment
variables or the database URL, so no credential can end up in the stored study.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import rksearch

#: distributions whose versions decide what a study computes
PACKAGES = ("torch", "torchvision", "ray", "optuna", "sqlalchemy", "alembic", "pandas", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _devices() -> list[str]:
    import torch

    devices = [f"cpu ({os.cpu_count()} cores)"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    return devices


def _git_describe() -> str | None:
    """`git describe` of the checkout rksearch runs from, or None for an installed wheel."""
    source = Path(rksearch.__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=source, capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def code_version() -> str:
    """rksearch's version, with the git commit when running from a checkout."""
    described = _git_describe()
    return f"{rksearch.__version__}+{described}" if described else rksearch.__version__


def capture() -> dict:
    """The environment of this process as a JSON-able dict."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": {name: _version(name) for name in PACKAGES},
        "devices": _devices(),
        "rksearch": rksearch.__version__,
        "git": _git_describe(),
    }
