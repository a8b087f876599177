#!/usr/bin/env bash
# One-shot GPU check: everything this project wants to know from its first GPU, in one run of
# under 8 minutes on one GPU.  From the repository root, in its environment:
#
#     bash benchmarks/gpu_check.sh 2>&1 | tee /tmp/gpu_check.txt
#
# 1. bench_train on CUDA, ERKNet-6x1 6x1 6x1 (k=36, batch 64) against its FLOP-matched
#    DenseNet: fp32 (plain and memory_efficient), bf16 AMP, bf16 + channels_last eager and
#    compiled; memory is torch.cuda.max_memory_allocated.
# 2. One CIFAR-shaped epoch (50,000 train + 10,000 val images, 32x32, synthetic, resident on the
#    GPU) of ERKNet-6x1 6x1 6x1, k=36, batch 64, through `run_trial` with the default runtime
#    (bf16, channels_last): one epoch of a Table-1 trial, in seconds; and its
#    max_memory_allocated against the cost model's estimate (`training_memory`).
# 3. Trials per hour with 1, 2 and 4 trials packed on the GPU (resources.gpu 1, 0.5, 0.25)
#    through the real engine (`rksearch.run_study`, Ray), on synthetic CIFAR-shaped data; each
#    trial's peak GPU memory (nvidia-smi, per process: CUDA context and allocator cache
#    included) against the cost model's estimate.
#
# It prints ratios, and one absolute time: the epoch's.  Without a GPU it prints "no GPU" and
# exits 0.  GPU_CHECK_FORCE_CPU=1 runs every step tiny on the CPU (small models and data, CPU
# shares instead of GPU shares, no nvidia-smi) to check the plumbing without a GPU; its time
# limits are 4x the GPU run's (GPU_CHECK_SLOW=n for n x).
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)

if [[ "${GPU_CHECK_FORCE_CPU:-0}" == 1 ]]; then
    TINY=1
    SLOW=${GPU_CHECK_SLOW:-4}  # time limits x this: CPU imports, tracing and compiling are slow
    echo "gpu_check: GPU_CHECK_FORCE_CPU=1: every step tiny on the CPU (plumbing only; the numbers mean nothing)"
elif ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no GPU (torch.cuda.is_available() is false); nothing to measure"
    exit 0
else
    TINY=0
    SLOW=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")'
started=$SECONDS

# a step over its share of the 8 minutes (the limits add up to 470 s) is stopped, and the check
# goes on with the next one
step() {
    local limit=$(($1 * SLOW)) title=$2
    shift 2
    echo
    echo "== $title (at $((SECONDS - started)) s)"
    timeout --kill-after=10 "$limit" "$@" || echo "!! $title: exit status $? (124: over its ${limit} s)"
}

# ---- 1. bench_train ---------------------------------------------------------------------------
if [[ $TINY == 1 ]]; then
    BENCH=(--device cpu --batch-size 4 --steps 1 --models IRKNet)
else
    BENCH=(--device cuda --batch-size 64 --steps 20 --warmup 3 --models ERKNet)
fi
step 75 "bench_train fp32, plain and memory_efficient" \
    "$PY" benchmarks/bench_train.py "${BENCH[@]}" --memory-efficient both
step 45 "bench_train bf16 AMP" \
    "$PY" benchmarks/bench_train.py "${BENCH[@]}" --memory-efficient off --amp
step 120 "bench_train bf16 AMP + channels_last, eager and compiled" \
    "$PY" benchmarks/bench_train.py "${BENCH[@]}" --memory-efficient off --amp --channels-last --compile both

# ---- 2. one CIFAR-shaped epoch ----------------------------------------------------------------
step 60 "one CIFAR-shaped epoch of ERKNet-6x1 6x1 6x1 (k=36, batch 64)" "$PY" - "$TINY" <<'EOF'
import sys

import torch

from rksearch.cost import human_bytes, training_memory
from rksearch.training.loop import run_trial

tiny = sys.argv[1] == "1"
name, k, batch = ("ERKNet-1x1 1x1 1x1", 4, 16) if tiny else ("ERKNet-6x1 6x1 6x1", 36, 64)
train, val = (64, 16) if tiny else (50_000, 10_000)
cuda = torch.cuda.is_available() and not tiny
if cuda:
    torch.cuda.reset_peak_memory_stats()
result = run_trial({
    "model": {"name": name, "knobs": {"k": k}},
    "data": {"dataset": "synthetic", "image_size": 32, "train_size": train, "val_size": val, "batch_size": batch},
    "optim": {"epochs": 1},
    "runtime": {"device": "cuda" if cuda else "cpu"},
})
epoch = result.history[-1]
print(f"{name} k={k}, batch {batch}, {train:,} + {val:,} images on {result.device}:")
print(f"  one epoch: {train / epoch['images_per_s']:.1f} s training, {epoch['seconds']:.1f} s with validation"
      + ("" if not tiny else "   (tiny CPU mode)"))
if cuda:
    estimate = training_memory(name, batch, 32, k=k)
    peak = torch.cuda.max_memory_allocated()
    print(f"  max_memory_allocated {human_bytes(peak)}: {peak / estimate.total:.2f}x the cost model's "
          f"estimate ({human_bytes(estimate.total)}, fp32; the run is bf16)")
EOF

# ---- 3. packed trials through the engine --------------------------------------------------------
step 170 "trials per hour with 1, 2 and 4 trials packed on the GPU (real engine)" "$PY" - "$TINY" "$WORK" <<'EOF'
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

from rksearch.api import run_study
from rksearch.cost import human_bytes, training_memory

tiny, work = sys.argv[1] == "1", Path(sys.argv[2])
name, k, batch = ("ERKNet-1x1 1x1 1x1", 4, 16) if tiny else ("ERKNet-6x1 6x1 6x1", 36, 64)
train, val = (64, 16) if tiny else (10_000, 2_000)
estimate = training_memory(name, batch, 32, k=k).total


def study(packed: int) -> dict:
    """2 x `packed` identical trials (one per seed), `packed` at a time on the one GPU (tiny: CPU shares)."""
    share = 1 / packed
    return {
        "name": f"gpu_check_packed_{packed}",
        "data": {"dataset": "synthetic", "image_size": 32, "train_size": train, "val_size": val,
                 "batch_size": batch},
        "train": {"epochs": 1},
        "space": {"name": [name], "growth": [k]},
        "search": {"algorithm": "grid"},
        "resources": {"cpu": share, "gpu": 0} if tiny else {"cpu": 2, "gpu": share},
        "seeds": list(range(2 * packed)),
    }


def gpu_memory_per_process(log: Path) -> dict[str, int]:
    """Peak MiB per process id in an `nvidia-smi --query-compute-apps` log."""
    peak: dict[str, int] = defaultdict(int)
    for line in log.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[1].isdigit():
            peak[parts[0]] = max(peak[parts[0]], int(parts[1]))
    return peak


rates = {}
for packed in (1, 2, 4):
    path = work / f"packed_{packed}.yaml"
    path.write_text(yaml.safe_dump(study(packed)))
    log = work / f"smi_{packed}.csv"
    smi = None if tiny else subprocess.Popen(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits", "-lms", "500"],
        stdout=log.open("w"), stderr=subprocess.DEVNULL)
    started = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        trials = run_study(path, storage=f"sqlite:///{work}/packed_{packed}.db",
                           storage_path=str(work / f"ck_{packed}"), stream=quiet)
    wall = time.perf_counter() - started
    if smi is not None:
        smi.terminate()
        smi.wait()
    span = (trials["finished_at"].max() - trials["started_at"].min()).total_seconds()
    rates[packed] = len(trials) / span * 3600
    line = (f"{packed} packed: {len(trials)} trials, {rates[packed] / rates[1]:.2f}x the trials/hour of 1 "
            f"(first start to last finish; {span / wall:.2f} of the call's wall time, the rest is Ray)")
    if smi is not None:
        peaks = sorted(gpu_memory_per_process(log).values())
        if peaks:
            print(f"{line}\n  peak GPU memory per trial process {peaks[0]}-{peaks[-1]} MiB: "
                  f"{peaks[-1] * 2**20 / estimate:.2f}x the cost model's estimate ({human_bytes(estimate)})")
            continue
    print(line)
EOF

echo
echo "gpu_check: done in $((SECONDS - started)) s; work files in $WORK"
