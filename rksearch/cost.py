"""Params, FLOPs and MACs of a model, fast enough to price a whole search space.

Convention (rkcnn.md section 6): params are all trainable parameters, BN affine included;
FLOPs = 2 x multiply-accumulates of conv and linear layers for one image at the data set's
input size (BN, ReLU, pooling, additions not counted) — what
`torch.utils.flop_counter.FlopCounterMode` reports.

RKCNN specs are priced in closed form (microseconds a spec, cached by value); anything else
(baselines, arbitrary modules) is traced once on the meta device, so nothing is allocated.
`tests/test_cost.py` checks that both agree on hundreds of random specs.

    python -m rksearch.cost "ERKNet-6x1 6x1 6x1" --growth-rate 36 --dataset cifar10 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import ArchSpec, SpecError, baselines, build, is_rkcnn_name, parse
from .models.naming import DATASETS
from .models.registry import find_family


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int
    macs: int

    def __str__(self) -> str:
        return f"{self.params / 1e6:.2f}M params, {self.flops / 1e9:.2f} GFLOPs"


def count(obj: ArchSpec | str | nn.Module, image_size: int | None = None, **knobs: Any) -> Cost:
    """Cost of a spec, a model name (plus knobs, e.g. k=36, dataset="cifar10") or a module.

    `image_size` defaults to the input size the model is made for: the spec's stem (32 for
    CIFAR-sized, 224 for ImageNet stems), a baseline's own size (224 for DenseNet-121).
    """
    if isinstance(obj, nn.Module):
        return trace(obj, image_size or 32)
    if isinstance(obj, str):
        if is_rkcnn_name(obj):
            obj = parse(obj, **knobs)
        else:
            find_family(obj.strip())  # a misspelt name: the message lists every family, RKCNNs too
            size = image_size or baselines.parse(obj, **knobs).default_image_size
            return _trace_named(obj, size, tuple(sorted((k, _hashable(v)) for k, v in knobs.items())))
    elif knobs:
        raise SpecError(f"knobs {sorted(knobs)} given with a spec; put them in the spec instead")
    return closed_form(obj, image_size or obj.default_image_size)


def trace(model: nn.Module, image_size: int = 32, in_channels: int = 3) -> Cost:
    """Count by running the model once under FlopCounterMode (on meta tensors when it lives there)."""
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return Cost(params=params, flops=flops, macs=flops // 2)


@lru_cache(maxsize=256)
def _trace_named(name: str, image_size: int, knobs: tuple[tuple[str, Any], ...]) -> Cost:
    with torch.device("meta"):
        model = build(name, **dict(knobs))
    return trace(model, image_size)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ---- closed form -------------------------------------------------------------------
class _Tally:
    """Accumulates params (each weight once) and MACs (each application)."""

    def __init__(self) -> None:
        self.params = 0
        self.macs = 0

    def conv(self, cin: int, cout: int, kernel: int, hw: int, uses: int = 1) -> None:
        weights = cin * cout * kernel * kernel
        self.params += weights
        self.macs += weights * hw * uses

    def bn(self, channels: int) -> None:
        self.params += 2 * channels

    def linear(self, cin: int, cout: int) -> None:
        self.params += cin * cout + cout
        self.macs += cin * cout

    def growth(self, cin: int, cout: int, width: int | None, hw: int, uses: int = 1) -> None:
        """GrowthLayer: [BN-ReLU-1x1 -> width] BN-ReLU-3x3 -> cout."""
        self.bn(cin)
        if width:
            self.conv(cin, width, 1, hw, uses)
            self.bn(width)
            cin = width
        self.conv(cin, cout, 3, hw, uses)


@lru_cache(maxsize=65536)
def closed_form(spec: ArchSpec, image_size: int) -> Cost:
    """Exact params/FLOPs/MACs of `spec` without building it (mirrors `RKCNN` layer by layer)."""
    t = _Tally()
    channels = spec.channels
    size = image_size
    if spec.stem == "cifar":
        t.conv(3, channels[0], 3, size * size)
    else:
        size = (size + 2 * 3 - 7) // 2 + 1
        t.conv(3, channels[0], 7, size * size)
        t.bn(channels[0])
        size = (size + 2 * 1 - 3) // 2 + 1
    for d in range(spec.periods):
        hw = size * size
        for _ in range(spec.steps[d]):
            _time_step(t, spec, d, hw)
        if d + 1 < spec.periods:
            t.bn(channels[d])
            t.conv(channels[d], channels[d + 1], 1, hw)
            if spec.attention:
                t.linear(channels[d + 1], channels[d + 1] // 2)
                t.linear(channels[d + 1] // 2, channels[d + 1])
            size //= 2
    tapped = channels if spec.multiscale else channels[-1:]
    for c in tapped:
        t.bn(c)
    t.linear(sum(tapped), spec.num_classes)
    return Cost(params=t.params, flops=2 * t.macs, macs=t.macs)


def _time_step(t: _Tally, spec: ArchSpec, d: int, hw: int) -> None:
    c, k, s, m = spec.channels[d], spec.growth[d], spec.stages[d], spec.groups[d]
    width = spec.neck * k if spec.neck else None
    if spec.form == "clique":
        kernel = 1 if width else 3
        mix_out = width or k
        for i in range(s):  # W(y -> i), used in stage I only
            t.conv(c, mix_out, kernel, hw)
            t.bn(c + i * k)  # stage-I BN of stage i
            t.bn((s - 1) * k)  # stage-II BN of stage i
        # W(j -> i), j != i: used once in stage I (j < i) and once in stage II: s(s-1) kernels,
        # s(s-1)/2 stage-I uses + s(s-1) stage-II uses
        t.params += s * (s - 1) * k * mix_out * kernel * kernel
        t.macs += (s * (s - 1) // 2 + s * (s - 1)) * k * mix_out * kernel * kernel * hw
        if width:
            for _ in range(s):  # shared 3x3 (width -> k) with a BN per phase
                t.conv(width, k, 3, hw, uses=2)
                t.bn(width)
                t.bn(width)
        return
    for j in range(m * s):  # explicit stage (the whole step for explicit; stage I for update)
        t.growth(c + j * k, k, width, hw)
    if spec.form == "update":
        for _ in range(s):
            t.growth(c + (s - 1) * m * k, m * k, width, hw, uses=spec.iterations[d])


# ---- command line ------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m rksearch.cost", description="Params, FLOPs and MACs of a model by name.")
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
    p.add_argument("--json", action="store_true", help="print JSON with keys name, canonical, params, flops, macs")
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
            spec = parse(args.name, **knobs)
            name, canonical = spec.name, spec.canonical
            cost = count(spec, args.image_size)
        else:
            name = canonical = args.name
            cost = count(args.name, args.image_size, **knobs)
    except (SpecError, TypeError, ValueError) as exc:
        parser.error(str(exc).splitlines()[0])
    if args.json:
        print(json.dumps({"name": name, "canonical": canonical, **asdict(cost)}))
    else:
        print(canonical)
        print(f"params  {cost.params:>15,}  ({cost.params / 1e6:.2f} M)")
        print(f"FLOPs   {cost.flops:>15,}  ({cost.flops / 1e9:.2f} G)")
        print(f"MACs    {cost.macs:>15,}  ({cost.macs / 1e9:.2f} G)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
