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

from rksearch.models import SpecError, model_spec
from rksearch.models.cost import Cost, Memory, closed_form, count, human_bytes, trace, trace_memory, training_memory
from rksearch.models.knobs import DATASETS

__all__ = ["Cost", "Memory", "closed_form", "count", "human_bytes", "main", "trace", "trace_memory",
           "training_memory"]

#: the widest bottleneck `--bottleneck` takes, as a multiple of k: the paper's are 1k and 4k, so a
#: larger figure is most likely a width in channels (128 meant as 4k builds a 199M-param model)
MAX_NECK = 8


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
    p.add_argument("--bottleneck", dest="neck",
                   help=f"bottleneck width as a multiple of k, at most {MAX_NECK}: 4 or 4k (suffix B)")
    p.add_argument("--no-multiscale", dest="multiscale", action="store_false", default=None)
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the data set's, else 10)")
    p.add_argument("--dropout", type=float, help="drop probability after each conv (the 2022 code's 0.2)")
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


def _check_neck(value: str, k: Any) -> None:
    """Refuse a `--bottleneck` that looks like a width in channels rather than a multiple of k."""
    text = value.lower().removesuffix("k")
    if not text.isdigit() or int(text) <= MAX_NECK:
        return  # a plausible multiple, or not a number (the model's parser says what is wrong)
    multiple = int(text)
    hint = (f"--bottleneck {multiple // k} for {multiple} channels at k={k}"
            if isinstance(k, int) and multiple % k == 0 else "--bottleneck 4 for a width of 4k (width / k)")
    raise ValueError(f"--bottleneck {value}: the bottleneck width is a multiple of k, at most {MAX_NECK}; "
                     f"for a width in channels divide it by k, e.g. {hint}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    names = ("k", "m", "r", "u", "dataset", "attention", "neck", "multiscale", "num_classes", "dropout")
    knobs = {key: _cli_value(getattr(args, key)) for key in names if getattr(args, key) is not None}
    try:
        if args.neck is not None:
            _check_neck(args.neck, knobs.get("k"))
        spec = model_spec(args.name, **knobs)
        cost = count(spec, args.image_size)
        memory = None if args.batch_size is None else training_memory(spec, args.batch_size, args.image_size)
    except (SpecError, TypeError, ValueError) as exc:
        parser.error(str(exc).splitlines()[0])
    if args.json:
        extra = {} if memory is None else {"batch_size": args.batch_size, "memory": asdict(memory)}
        print(json.dumps({"name": spec.name, "canonical": spec.canonical, **asdict(cost), **extra}))
        return 0
    print(spec.canonical)
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
