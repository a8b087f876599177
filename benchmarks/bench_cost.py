"""How fast `rksearch.cost` prices a search space: distinct CIFAR-sized specs per second.

The closed form is what the study planner uses (budgets, --dry-run, Optuna's multi-objective
FLOPs); the baseline is a FlopCounterMode trace of the built model on the meta device, the
obvious way to get the same numbers.  Both price the same random specs in the same run, and
the closed form's answers are checked against the traces on the way.

    python benchmarks/bench_cost.py [--specs 2000] [--traced 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from specgen import random_spec  # noqa: E402

from rksearch import cost  # noqa: E402
from rksearch.models import RKCNN  # noqa: E402


def distinct_cifar_specs(n: int, seed: int) -> list:
    rng, specs = random.Random(seed), {}
    while len(specs) < n:
        spec = random_spec(rng)
        if spec.stem == "cifar":
            specs.setdefault(spec, None)
    return list(specs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", type=int, default=2000, help="distinct specs priced in closed form")
    ap.add_argument("--traced", type=int, default=20, help="specs priced by the traced baseline")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    specs = distinct_cifar_specs(args.specs, args.seed)

    cost.closed_form.cache_clear()
    started = time.perf_counter()
    closed = [cost.closed_form(s, 32) for s in specs]
    closed_rate = len(specs) / (time.perf_counter() - started)

    started = time.perf_counter()
    for spec, expected in zip(specs[: args.traced], closed):
        with torch.device("meta"):
            model = RKCNN(spec)
        traced = cost.trace(model, 32)
        if traced != expected:
            raise SystemExit(f"closed form disagrees with the trace for {spec.canonical}: {expected} vs {traced}")
    traced_rate = args.traced / (time.perf_counter() - started)

    print(f"closed form : {closed_rate:10.0f} specs/s  ({len(specs)} distinct CIFAR specs, cache cleared, 1 thread)")
    print(f"traced, meta: {traced_rate:10.1f} specs/s  ({args.traced} specs, same answers)")
    print(f"ratio closed/traced: {closed_rate / traced_rate:.0f}x; goal >= 200 specs/s: "
          f"{'met' if closed_rate >= 200 else 'NOT met'} ({closed_rate / 200:.0f}x the goal)")


if __name__ == "__main__":
    main()
