"""What a study and each of its trials ran on, stored with them so a result can be explained
a year later.

The study's environment is the driver's (`capture`); a trial's is its worker's
(`trial_environment`), since on a cluster the two differ in node, GPU and even code version.
Versions come from package metadata (no imports of Ray or Optuna just to read a version); the
devices from torch, which every study imports anyway.  Nothing here reads the environment
variables or the database URL, so no credential can end up in the stored study.  This module
imports neither SQLAlchemy nor Ray: workers import it for every trial.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from functools import lru_cache
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


#: the checkout rksearch runs from, if it runs from one
SOURCE = Path(rksearch.__file__).resolve().parent.parent


@lru_cache(maxsize=4)
def _git_describe(source: Path = SOURCE) -> str | None:
    """`git describe` of the checkout rksearch runs from, or None for an installed wheel.

    A checkout with uncommitted changes reads ``<commit>-dirty.<digest>``: the digest (of
    ``git diff HEAD``) tells two different sets of changes on one commit apart, so `reuse`
    never takes one for the other.  (Untracked files are not in it.)
    """
    if not (source / ".git").exists():
        return None
    try:
        described = _git(source, "describe", "--always", "--dirty", "--tags").decode().strip()
        if described.endswith("-dirty"):
            described += "." + hashlib.sha256(_git(source, "diff", "HEAD", "--binary")).hexdigest()[:8]
    except (OSError, subprocess.SubprocessError):
        return None
    return described or None


def _git(source: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=source, capture_output=True, timeout=10, check=True).stdout


def code_version() -> str:
    """rksearch's version, with the git commit when running from a checkout."""
    described = _git_describe()
    return f"{rksearch.__version__}+{described}" if described else rksearch.__version__


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def trial_environment(device: str, node_id: str | None = None) -> dict:
    """What one trial runs on, captured by its worker: code, library and driver versions, the
    processor that computes (`device` is ``"cuda"`` or ``"cpu"``) and the node."""
    import torch

    on_gpu = device == "cuda" and torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "rksearch": rksearch.__version__,
        "git": _git_describe(),
        "code_version": code_version()[:50],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu: {_cpu_model()}",
        "hostname": socket.gethostname(),
        "node_id": node_id,
    }


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
