"""Where and how a trial computes: device, mixed precision, memory format, threads, determinism.

Trials share machines (several per node under Ray, or a notebook), so every global torch
setting a trial changes is restored when it ends (`activated`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: cuBLAS needs this workspace setting for deterministic matrix products
CUBLAS_DETERMINISTIC = ":4096:8"
#: `compile: auto` compiles CUDA trials of at least this many epochs and never CPU ones.  On the
#: CPU (bench_train --compile, benchmarks/README.md) compiling took 405 s of the trial's 2 cores
#: for ERKNet-6x1 6x1 6x1, which then trained at 0.97x eager, and 120 s for IRKNet-3x1 3x1 3x1
#: (1.43x eager): minutes of a CPU share that co-located trials also need, for a gain that
#: depends on the model.  On CUDA the compiling is the same CPU work, once per trial process,
#: against ~800 steps per CIFAR epoch at batch 64; the threshold keeps it off the short
#: screening trials a search mostly runs, until gpu_check.sh has measured it on a GPU.
COMPILE_AUTO_MIN_EPOCHS = 10


class RuntimeConfig(BaseModel):
    """The `runtime` section of a trial config; 'auto' means: what is fastest on the device."""

    model_config = ConfigDict(extra="forbid")

    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="auto: bf16 (fp16 if unsupported) on CUDA, off on CPU")
    channels_last: Literal["auto"] | bool = Field("auto", description="auto: on (faster on CUDA and CPU alike)")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: the trial's CPU share")
    deterministic: bool = False
    memory_efficient: bool = Field(False, description="recompute dense concatenations in backward (less memory)")
    compile: Literal["off", "on", "auto"] = Field(
        "off", description=f"torch.compile the model; auto: on for CUDA trials of >= {COMPILE_AUTO_MIN_EPOCHS} epochs")

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        """YAML reads a bare ``amp: off`` as false: that is 'off', not an error."""
        return "off" if value is False else value

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        """YAML reads a bare ``compile: on`` / ``off`` as true / false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    threads: int
    deterministic: bool

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else f"cpu x{self.threads}"
        amp = str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "fp32"
        return f"{name} ({amp}{', channels_last' if self.channels_last else ''})"


def trial_cpus() -> int:
    """CPUs this trial may use: RKSEARCH_TRIAL_CPUS, else OMP_NUM_THREADS (Ray sets it to the
    trial's num_cpus), else the CPUs this process is pinned to."""
    for var in ("RKSEARCH_TRIAL_CPUS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def planned(cfg: RuntimeConfig, gpus: float) -> RuntimeConfig:
    """The runtime of a trial that Ray gives `gpus` GPUs, with the device and precision made concrete.

    The driver plans trials for workers it does not run on: under Ray a trial sees a GPU exactly
    when it was given one, so 'auto' resolves to CUDA then and to the CPU otherwise, and mixed
    precision to bf16 (fp16 where the driver's own GPU lacks bf16; a driver without a GPU
    assumes bf16, and a worker whose GPU cannot do it says so rather than silently using
    another precision).  The trial key hashes this, so two trials share a key only when they
    compute in the same precision on the same kind of device.  The memory format stays as the
    study says (`layout` resolves it on the worker): the key records it as `keyed_layout`.
    """
    on_gpu = cfg.device == "cuda" or (cfg.device == "auto" and gpus > 0)
    amp = cfg.amp
    if amp == "auto":
        amp = ("fp16" if torch.cuda.is_available() and not torch.cuda.is_bf16_supported() else "bf16") if on_gpu else "off"
    return cfg.model_copy(update={"device": "cuda" if on_gpu else "cpu", "amp": amp,
                                  "deterministic": cfg.deterministic})


def layout(channels_last: Literal["auto"] | bool) -> bool:
    """Whether a trial trains in the channels-last memory format: 'auto' is on, on CUDA as on
    the CPU, where it trained every RKCNN measured 1.08-1.34x faster than the default format
    (benchmarks/README.md, "Channels-last on the CPU")."""
    return True if channels_last == "auto" else channels_last


def keyed_layout(channels_last: Literal["auto"] | bool, device: str) -> bool:
    """The memory format as a trial key records it: what 'auto' meant before it meant on
    everywhere (on for CUDA, off on the CPU).  The format decides how fast a trial runs, not
    what it computes (as `compile` does not), so keys keep this value only so that the trials
    already in databases keep their keys: a resumed study finds them, and reuse links them.

    The price: on the CPU, 'auto' (channels-last now) shares its key with an explicit false
    (contiguous) and not with an explicit true, though 'auto' and true train alike; and a
    study resumed across the change holds trials of both layouts under one key, which differ
    as compiled and eager ones do, in the order of floating-point sums."""
    return device == "cuda" if channels_last == "auto" else channels_last


def resolve(cfg: RuntimeConfig) -> Runtime:
    """Turn the config's 'auto' choices into concrete ones for this machine: what `planned`
    gives a trial with a GPU exactly when this machine has one, checked against the machine."""
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise RuntimeError("runtime.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    concrete = planned(cfg, gpus=1 if cuda else 0)
    device = torch.device(concrete.device)
    on_gpu = device.type == "cuda"
    if concrete.amp == "fp16" and not on_gpu:
        raise RuntimeError("runtime.amp 'fp16' needs CUDA; use 'bf16' or 'off' on CPU")
    if concrete.amp == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"runtime.amp is 'bf16' but {torch.cuda.get_device_name(device)} does not support "
                           f"bfloat16; set runtime.amp: fp16 (or off) in the study")
    return Runtime(device, _AMP_DTYPES[concrete.amp], layout(concrete.channels_last), cfg.threads or trial_cpus(),
                   cfg.deterministic)


@contextmanager
def activated(runtime: Runtime) -> Iterator[None]:
    """Apply the runtime's thread count and determinism; restore the previous settings after."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.set_num_threads(runtime.threads)
    if runtime.deterministic:
        if runtime.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = runtime.deterministic
    torch.backends.cudnn.benchmark = runtime.device.type == "cuda" and not runtime.deterministic
    try:
        yield
    finally:
        threads, det, warn_only, cudnn_det, cudnn_bench = saved
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench


def compiles(cfg: RuntimeConfig, runtime: Runtime, epochs: int) -> bool:
    """Whether a trial of `epochs` epochs on `runtime` compiles its model (`compile`)."""
    if cfg.compile == "auto":
        return runtime.device.type == "cuda" and epochs >= COMPILE_AUTO_MIN_EPOCHS
    return cfg.compile == "on"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from the trial's seed."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)

