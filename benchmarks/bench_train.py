"""Training throughput and peak memory of two RKCNNs against FLOP-matched torchvision DenseNets.

    python benchmarks/bench_train.py                       # CPU, short (about 2 min on 2 cores)
    python benchmarks/bench_train.py --device cuda --batch-size 64 --steps 20 --amp --channels-last

Models (CIFAR size, 32x32 inputs, 10 classes): ERKNet-6x1 6x1 6x1 and IRKNet-3x1 3x1 3x1 with
k=36, each against a torchvision `DenseNet` (DenseNet-BC: bottleneck 4k, compression 0.5,
growth 12, three equal dense blocks) whose block depth is chosen so that its forward FLOPs
at 32x32 (`rksearch.cost.count`) are the closest to ours.  The DenseNet gets the CIFAR stem
(3x3 conv, no pooling) in place of torchvision's ImageNet stem, so both networks work at
32, 16 and 8 px, as in the papers' CIFAR comparisons.

What is measured, per model, in a fresh subprocess (one model per process, so memory peaks
do not mix): SGD training steps (Nesterov 0.9, wd 1e-4, cross-entropy) on random batches
already on the device — model compute only, no data pipeline.  `--warmup` steps are not
timed.  Throughput is images/s; the FLOP-normalised figure is images/s x forward GFLOPs per
image (the model work done per second), and "per FLOP vs DenseNet" is ours divided by the
matched DenseNet's, >= 1.0 meaning ours turns FLOPs into training at least as fast.
Memory: on CUDA `torch.cuda.max_memory_allocated` over the run (weights, optimiser state,
activations); on CPU the growth of the process's peak resident set (VmHWM in
/proc/self/status) from just before the model is built to the end of the timed steps — it
includes the allocator's caching, so read it as "RAM this training needs", comparable
between models measured the same way.  Both are also given per image of the batch.

`--memory-efficient both` (the default) measures every model plain and with the dense
concatenations recomputed in backward (ours: `rksearch.models.build(...,
memory_efficient=True)`; DenseNet: torchvision's own `memory_efficient=True`).

`--compile on|both` also measures our models compiled in place (`nn.Module.compile`, what
``runtime.compile: on`` does); the DenseNet stays eager.  The first step, where the compiling
happens, is timed on its own ("first step s") and never counted in images/s; a summary line
says after how many steps the compiled model has made up for it.

`--baseline-tree PATH` measures our models (eager) once more with the rksearch of another
checkout, e.g. ``git worktree add /tmp/before <commit>``: its own benchmarks/bench_train.py
runs the job, so it imports its own rksearch.  A summary line gives ours/baseline images/s,
the ratio of medians over `--rounds` alternating runs of both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rksearch.cost import count
from rksearch.models import build
from rksearch.training.runtime import RuntimeConfig, activated, resolve, trial_cpus

OURS = ("ERKNet-6x1 6x1 6x1", "IRKNet-3x1 3x1 3x1")
GROWTH, IMAGE, CLASSES = 36, 32, 10
DENSENET_GROWTH = 12


def densenet(blocks: int, memory_efficient: bool = False) -> nn.Module:
    """torchvision DenseNet-BC (growth 12, `blocks` layers in each of 3 blocks) with a CIFAR stem."""
    model = DenseNet(growth_rate=DENSENET_GROWTH, block_config=(blocks,) * 3, num_init_features=2 * DENSENET_GROWTH,
                     num_classes=CLASSES, memory_efficient=memory_efficient)
    model.features.conv0 = nn.Conv2d(3, 2 * DENSENET_GROWTH, 3, padding=1, bias=False)
    model.features.pool0 = nn.Identity()
    return model


def matched_blocks(target_flops: int) -> int:
    """The DenseNet block depth whose FLOPs at 32x32 are closest to `target_flops`."""
    best, blocks = None, 2
    while True:
        flops = count(densenet(blocks), IMAGE).flops
        if best is None or abs(flops - target_flops) < abs(best[1] - target_flops):
            best = (blocks, flops)
        if flops > target_flops:
            return best[0]
        blocks += 1


def make_model(name: str, memory_efficient: bool) -> nn.Module:
    if name.startswith("DenseNet"):
        return densenet(int(name.split("-")[-1].split("x")[0]), memory_efficient)
    return build(name, memory_efficient=memory_efficient, k=GROWTH, dataset="cifar10")


def _vm(field: str) -> int:
    """A /proc/self/status memory field in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Run one model's training steps in this process; return images/s, the first step's
    seconds (compiling included) and peak memory."""
    rt = resolve(RuntimeConfig(device=job["device"], amp=job["amp"], channels_last=job["channels_last"],
                               threads=job["threads"]))
    with activated(rt):
        torch.manual_seed(0)
        n = job["batch_size"]
        images = torch.randn(n, 3, IMAGE, IMAGE, device=rt.device).contiguous(memory_format=rt.memory_format)
        labels = torch.randint(0, CLASSES, (n,), device=rt.device)
        cuda = rt.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss_before = _vm("VmRSS")
        model = make_model(job["name"], job["memory_efficient"]).to(rt.device, memory_format=rt.memory_format)
        if job.get("compile"):
            model.compile()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        model.train()

        def step() -> None:
            with rt.autocast():
                loss = F.cross_entropy(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        started = time.perf_counter()
        step()  # the first warm-up step: compiling, allocator, cuDNN autotune
        if cuda:
            torch.cuda.synchronize()
        first_step = time.perf_counter() - started
        for _ in range(job["warmup"] - 1):
            step()
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(job["steps"]):
            step()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() if cuda else _vm("VmHWM") - rss_before
    return {"images_per_s": n * job["steps"] / seconds, "first_step_s": first_step, "peak_bytes": peak,
            "device": rt.describe()}


def run_job(job: dict[str, Any], tree: Path | None = None) -> dict[str, Any]:
    """`measure` in a fresh interpreter, so each model's memory peak is its own; with `tree`,
    that checkout's bench_train.py (and so its rksearch) runs it."""
    script = tree / "benchmarks" / "bench_train.py" if tree else Path(__file__)
    out = subprocess.run([sys.executable, str(script), "--job", json.dumps(job)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first, at least 1 (compiling, allocator, cuDNN autotune)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA: fp16 if bf16 is unsupported)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--memory-efficient", choices=["off", "on", "both"], default="both",
                   help="recompute the dense concatenations in backward (ours and DenseNet alike)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: this process's CPUs)")
    p.add_argument("--compile", choices=["off", "on", "both"], default="off",
                   help="our models compiled with torch.compile (the DenseNet stays eager)")
    p.add_argument("--baseline-tree", type=Path, help="also measure our models with the rksearch of this checkout")
    p.add_argument("--rounds", type=int, default=1,
                   help="with --baseline-tree: alternate here/baseline this many times, ratio of medians")
    p.add_argument("--models", help="only our models whose name contains this (e.g. ERKNet)")
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return 0

    amp = ("auto" if args.device == "cuda" else "bf16") if args.amp else "off"
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.memory_efficient]
    base = {"device": args.device, "amp": amp, "channels_last": args.channels_last, "batch_size": args.batch_size,
            "steps": args.steps, "warmup": args.warmup, "threads": args.threads or trial_cpus()}
    print(f"bench_train: batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"amp={amp}, channels_last={args.channels_last}, threads={base['threads']}")
    compiled_modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows, notes = [], []
    for ours in OURS:
        if args.models and args.models not in ours:
            continue
        ours_cost = count(ours, k=GROWTH, dataset="cifar10")
        blocks = matched_blocks(ours_cost.flops)
        baseline = f"DenseNet-BC-k12-{blocks}x3"
        base_cost = count(densenet(blocks), IMAGE)
        print(f"{ours} (k={GROWTH}): {ours_cost}   vs   {baseline}: {base_cost}")
        for mem_eff in modes:
            jobs = {name: {**base, "name": name, "memory_efficient": mem_eff} for name in (ours, baseline)}
            measured = {name: run_job(job) for name, job in jobs.items()}
            ref = measured[baseline]
            runs = [(ours, ours_cost, False, measured[ours]), (baseline, base_cost, False, ref)]
            if True in compiled_modes:
                runs.insert(1, (ours, ours_cost, True, run_job({**jobs[ours], "compile": True})))
                notes.append(_compile_note(ours, mem_eff, measured[ours], runs[1][3], args.batch_size))
            if False not in compiled_modes:
                runs.pop(0)
            if args.baseline_tree:
                notes.append(_baseline_note(ours, mem_eff, jobs[ours], measured[ours], args.baseline_tree,
                                            args.rounds))
            for name, cost, compiled, m in runs:
                gflops = cost.flops / 1e9
                rows.append({
                    "model": name, "mem_eff": mem_eff, "compiled": compiled, "GFLOPs": gflops,
                    "params_M": cost.params / 1e6, "img/s": m["images_per_s"], "first step s": m["first_step_s"],
                    "per FLOP vs DenseNet": (m["images_per_s"] * gflops) / (ref["images_per_s"] * base_cost.flops / 1e9),
                    "img/s vs DenseNet": m["images_per_s"] / ref["images_per_s"],
                    "peak MiB": m["peak_bytes"] / 2**20,
                    "MiB/img": m["peak_bytes"] / 2**20 / args.batch_size,
                    "mem/img vs DenseNet": m["peak_bytes"] / max(ref["peak_bytes"], 1),
                })
            device = measured[ours]["device"]
    print(f"device: {device}; memory: {'torch.cuda.max_memory_allocated' if args.device == 'cuda' else 'VmHWM growth'}")
    _print_table(rows)
    for note in notes:
        print(note)
    return 0


def _baseline_note(name: str, mem_eff: bool, job: dict[str, Any], first: dict[str, Any], tree: Path,
                   rounds: int) -> str:
    """Our model here against `tree`'s, alternating `rounds` times (here, there, here, ...) so
    that load from other jobs falls on both; the ratio of the medians."""
    here, there = [first["images_per_s"]], []
    for r in range(rounds):
        there.append(run_job(job, tree)["images_per_s"])
        if r + 1 < rounds:
            here.append(run_job(job)["images_per_s"])
    ours, theirs = statistics.median(here), statistics.median(there)
    return (f"{name} mem_eff={mem_eff}: median {ours:.2f} img/s here, {theirs:.2f} with {tree} "
            f"({rounds} alternating rounds): {ours / theirs:.2f}x")


def _compile_note(name: str, mem_eff: bool, eager: dict[str, Any], compiled: dict[str, Any], batch: int) -> str:
    """What compiling costs once and saves per step, and when it has paid for itself."""
    extra = compiled["first_step_s"] - eager["first_step_s"]
    saved = batch / eager["images_per_s"] - batch / compiled["images_per_s"]
    when = (f"pays off after {extra / saved:.0f} steps ({extra / saved * batch / 50_000:.2f} CIFAR epochs)"
            if saved > 0 else "never pays off (no faster per step)")
    return (f"{name} mem_eff={mem_eff}: compiled {compiled['images_per_s'] / eager['images_per_s']:.2f}x eager "
            f"img/s; compiling costs {extra:.1f} s once (first step {compiled['first_step_s']:.1f} s vs "
            f"{eager['first_step_s']:.1f} s); {when}")


def _print_table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    cells = [[f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


if __name__ == "__main__":
    raise SystemExit(main())
