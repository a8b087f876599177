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
from typing import Sequence

from rksearch.cli import exits_on_error
from rksearch.models import model_spec
from rksearch.models.cost import Cost, Memory, closed_form, count, human_bytes, trace, trace_memory, training_memory
from rksearch.models.knobs import DATASETS
from rksearch.models.spec import MAX_NECK

__all__ = ["Cost", "Memory", "closed_form", "count", "human_bytes", "main", "trace", "trace_memory",
           "training_memory"]


# ---- command line ------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


#: the command's name in its usage line when run as a module (`rksearch.cli` passes its own)
PROG = "python -m rksearch.cost"


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = _Parser(prog=prog,
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


@exits_on_error(ValueError)
def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Print the model's cost.  A name or knobs the model refuses (`SpecError`), or an input size it
    cannot take (ValueError), end it with one ``error:`` line and status 2, as every rksearch
    command does.  Knob values stay text: each family reads them as it reads a
    name's own knob list."""
    args = _parser(prog).parse_args(argv)
    names = ("k", "m", "r", "u", "dataset", "attention", "neck", "multiscale", "num_classes", "dropout")
    knobs = {key: getattr(args, key) for key in names if getattr(args, key) is not None}
    spec = model_spec(args.name, **knobs)
    cost = count(spec, args.image_size)
    memory = None if args.batch_size is None else training_memory(spec, args.batch_size, args.image_size)
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
