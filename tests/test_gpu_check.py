"""benchmarks/gpu_check.sh on a machine without a GPU: it says so and succeeds, so that CI and
CPU-only workers can run it as-is (its GPU steps are checked by hand with GPU_CHECK_FORCE_CPU=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would measure it")
def test_without_a_gpu_it_says_no_gpu_and_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_FORCE_CPU"}
    # the timeout is a guard only: import torch alone can take a minute on a loaded machine
    done = subprocess.run(["bash", str(SCRIPT)], env={**env, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stdout
    assert "bench_train" not in done.stdout  # it stopped there: nothing was run


def test_the_script_parses() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
