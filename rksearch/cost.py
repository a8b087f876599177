"""`python -m rksearch.cost NAME`: params, FLOPs, MACs and training memory of a model by name.

The cost model itself lives in `rksearch.models.cost`; this module is its command line and
re-exports its public names, so `from rksearch.cost import count` keeps working.

    python -m rksearch.cost "ERKNet-6x1 6x1 6x1" --growth-rate 36 --dataset cifar10 --json
    python -m rksearch.cost "ERKNet-6x1 6x1 6x1" --growth-rate 36 --batch-size 64   # + memory
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Sequence

from rksearch.models import ArchSpec, SpecError, is_rkcnn_name, parse
from rksearch.models.cost import Cost, Memory, closed_form, count, human_bytes, trace, trace_memory, training_memory
from rksearch.models.naming import DATASETS

__all__ = ["Cost", "Memory", "closed_form", "count", "human_bytes", "main", "trace", "trace_memory",
           "training_memory"]


# ---- command line ------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m rksearch.cost",
                description="Params, FLOPs and MACs of a model by name; with --batch-size, its training memory.")
    p.add_argument("name", help="e.g. 'ERKNet-6x1 6x1 6x1', 'IRKNet-5x1 5x1 5x1-AB', 'RKCNN-I-3_3_3', 'DenseNet-BC-100'")
    p.add_argument("--growth-rate", "-k", dest="k", help="growth rate k: one value or one per period (12,24,48)")
    p.add_argument("--m", help="groups per stage m: one value or one per period (2,4,8,16)")
    p.add_argument("--r", help="time-steps per period (2022 RKCNN names)")
    p.add_argument("--u", help="update iterations (RKCNN-I/R)")
    p.add_argument("--dataset", choices=sorted(DATASETS), help="sets the stem, input size and classes")
    p.add_argument("--attention", action="store_true", default=None, help="attentional transition (suffix A)")
    p.add_argument("--bottleneck", dest="neck", help="bottleneck width as a multiple of k: 4 or 4k (suffix B)")
    p.add_argument("--no-multiscale", dest="multiscale", action="store_false", default=None)
    p.add_argument("--image-size", type=int, help="input side in pixels (default: 32, or 224 for ImageNet)")
    p.add_argument("--batch-size", type=int, help="also estimate the memory to train at this batch size "
                                                  "(float32, SGD with momentum)")
    p.add_argument("--json", action="store_true", help="print JSON with keys name, canonical, params, flops, macs "
                                                       "(and batch_size, memory with --batch-size)")
    return p


def _cli_value(value: Any) -> Any:
    """'36' -> 36 and '2,4,8,16' -> (2, 4, 8, 16); anything else unchanged (parse validates it)."""
    if isinstance(value, str) and value.replace(",", "").isdigit():
        numbers = tuple(int(v) for v in value.split(",") if v)
        return numbers[0] if len(numbers) == 1 else numbers
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    knobs = {key: getattr(args, key) for key in ("k", "m", "r", "u", "dataset", "attention", "neck", "multiscale")}
    knobs = {key: _cli_value(value) for key, value in knobs.items() if value is not None}
    try:
        if is_rkcnn_name(args.name):
            model: ArchSpec | str = parse(args.name, **knobs)
            name, canonical, knobs = model.name, model.canonical, {}
        else:
            model = name = canonical = args.name
        cost = count(model, args.image_size, **knobs)
        memory = None if args.batch_size is None else training_memory(model, args.batch_size, args.image_size, **knobs)
    except (SpecError, TypeError, ValueError) as exc:
        parser.error(str(exc).splitlines()[0])
    if args.json:
        extra = {} if memory is None else {"batch_size": args.batch_size, "memory": asdict(memory)}
        print(json.dumps({"name": name, "canonical": canonical, **asdict(cost), **extra}))
        return 0
    print(canonical)
    print(f"params  {cost.params:>15,}  ({cost.params / 1e6:.2f} M)")
    print(f"FLOPs   {cost.flops:>15,}  ({cost.flops / 1e9:.2f} G)")
    print(f"MACs    {cost.macs:>15,}  ({cost.macs / 1e9:.2f} G)")
    if memory is not None:
        parts = ", ".join(f"{human_bytes(getattr(memory, part))} {part}"
                          for part in ("parameters", "gradients", "optimizer", "activations"))
        print(f"memory  {memory.total:>15,}  "
              f"({human_bytes(memory.total)} to train at batch {args.batch_size}: {parts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
