"""Our RKCNNs against the official 2022 code (github.com/ZhuMai/RKCNN) on the same models.

    git --git-dir=<mirror of ZhuMai/RKCNN> archive HEAD | tar -x -C /tmp/rkcnn-official
    python benchmarks/bench_official.py --official /tmp/rkcnn-official

The official code is imported from PATH at run time (never copied here).  For each
configuration it builds the model both ways, copies our weights into the official model
(`official_key` maps the names), and checks that they agree: the same parameter count, the
same outputs on the same batch in eval mode and in train mode (the BN batch statistics
included).  Then it times SGD training steps (Nesterov 0.9, wd 1e-4, cross-entropy) on a
random CIFAR-sized batch, alternating ours and official `--rounds` times in the one process
(ours first in even rounds, the official first in odd ones), so that load from other jobs and
the order fall on both alike, and prints ours/official images/s (the
ratio of the two medians; > 1 means ours is faster).

Ours trains in the memory format our trainer gives it by default (`runtime.channels_last:
auto`: channels-last; the batch converted once, as the trainer does), the official model as
its train_cifar.py does, in PyTorch's default format; ``--ours-format contiguous`` trains ours
in the default format too, which compares the model code alone.

The official constructor's defaults follow its README: bottleneck on, multiscale on, keep
probability 1 (no dropout), one time-step per period, u = 1 in every period for RKCNN-I/R
(``--replace`` makes it RKCNN-I).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rksearch.models import build
from rksearch.models.naming import parse

#: (our name, knobs): the issue's two models, and RKCNN-I (the official code has it as --replace)
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("RKCNN-R-3_3_3", {"k": 36, "neck": 1}),
    ("RKCNN-E-5_5_5", {"k": 80, "neck": 1, "attention": True}),
    ("RKCNN-I-3_3_3", {"k": 36, "neck": 1}),
]


def official_model(module: Any, name: str, knobs: dict[str, Any]) -> nn.Module:
    """The official `build_RKCNN` for our (name, knobs), as its train_cifar.py would build it."""
    spec = parse(name, **knobs)
    kind = name.split("-")[1]
    return module.build_RKCNN(
        growth_rates=list(spec.growth), stages=list(spec.stages), if_att=spec.attention,
        update_nums=[0] * spec.periods if kind == "E" else list(spec.iterations), keep_prob=1.0 - spec.dropout,
        out_features=spec.num_classes, if_b=True, steps=list(spec.steps), neck=spec.neck,
        multiscale=spec.multiscale, replace=kind == "I")


#: our parameter/buffer names -> the official ones; {b} is the official block index (time-steps
#: counted over all periods), the groups are ours
_STEP_KEYS = [
    (r"(?:first\.)?layers\.(\d+)\.reduce\.0\.", "init_bn_1x1.{0}."),
    (r"(?:first\.)?layers\.(\d+)\.reduce\.2\.", "conv_1x1.{0}."),
    (r"(?:first\.)?layers\.(\d+)\.conv\.0\.", "init_bn_3x3.{0}."),
    (r"(?:first\.)?layers\.(\d+)\.conv\.2\.", "conv_3x3.{0}."),
    (r"updaters\.(\d+)\.reduce\.0\.", "update_bn_1x1.{0}."),
    (r"updaters\.(\d+)\.reduce\.2\.", "conv_1x1_update.{0}."),
    (r"updaters\.(\d+)\.conv\.0\.", "update_bn_3x3.{0}."),
    (r"updaters\.(\d+)\.conv\.2\.", "conv_3x3_update.{0}."),
]
_OTHER_KEYS = [
    (r"stem\.0\.", "fir_trans."),
    (r"transitions\.(\d+)\.0\.0\.", "list_trans.{0}.bn."),
    (r"transitions\.(\d+)\.0\.2\.", "list_trans.{0}.conv."),
    (r"transitions\.(\d+)\.1\.(fc\d)\.", "list_trans.{0}.attention.{1}."),
    (r"head\.norms\.(\d+)\.", "list_gb.{0}.bn."),
    (r"head\.classifier\.", "fc."),
]


def official_key(key: str, steps: tuple[int, ...]) -> str:
    """The official state-dict name of our `key` (steps: time-steps per period)."""
    if m := re.match(r"periods\.(\d+)\.(\d+)\.(.*)$", key):
        block = sum(steps[: int(m[1])]) + int(m[2])
        for pattern, target in _STEP_KEYS:
            if s := re.match(pattern + r"(.*)$", m[3]):
                return f"list_block.{block}." + target.format(*s.groups()[:-1]) + s.groups()[-1]
    for pattern, target in _OTHER_KEYS:
        if s := re.match(pattern + r"(.*)$", key):
            return target.format(*s.groups()[:-1]) + s.groups()[-1]
    raise KeyError(f"no official name for {key!r}")


def copy_weights(ours: nn.Module, official: nn.Module, steps: tuple[int, ...]) -> None:
    """Load our state into the official model; every official entry must be covered exactly once."""
    mapped = {official_key(k, steps): v for k, v in ours.state_dict().items()}
    missing = set(official.state_dict()) - set(mapped)
    extra = set(mapped) - set(official.state_dict())
    if missing or extra:
        raise RuntimeError(f"weights do not map: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}")
    official.load_state_dict(mapped)


def check_agree(ours: nn.Module, official: nn.Module, batch: torch.Tensor) -> str:
    """Raise unless both have the same parameter count and outputs; a one-line summary."""
    params = [sum(p.numel() for p in m.parameters()) for m in (ours, official)]
    if params[0] != params[1]:
        raise RuntimeError(f"parameter counts differ: ours {params[0]}, official {params[1]}")
    worst = 0.0
    for train in (False, True):
        outs = []
        for m in (ours, official):
            m.train(train)
            saved = {k: v.clone() for k, v in m.state_dict().items()}  # train mode moves BN statistics
            with torch.no_grad():
                outs.append(m(batch))
            m.load_state_dict(saved)
        diff = (outs[0] - outs[1]).abs().max().item()
        worst = max(worst, diff)
        if not torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"outputs differ ({'train' if train else 'eval'} mode): max |diff| {diff:.2e}")
    return f"{params[0]:,} params both; outputs agree in eval and train mode (max |diff| {worst:.1e})"


def trainer(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One SGD-Nesterov training step of `model` on the fixed batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)

    def step() -> None:
        model.train()
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step: Callable[[], None], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, type=Path, help="a checkout of github.com/ZhuMai/RKCNN")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=5, help="alternating ours/official rounds per model")
    p.add_argument("--only", help="run only the configurations whose name contains this")
    p.add_argument("--ours-format", choices=("channels_last", "contiguous"), default="channels_last",
                   help="our model's memory format (default channels_last: what runtime.channels_last: auto trains)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.official.resolve()))
    import pytorch_models.RKCNN as official_rkcnn  # the official code, from --official

    torch.set_num_threads(args.threads)
    channels_last = args.ours_format == "channels_last"
    layout = "ours channels-last, official default format" if channels_last else "both in the default memory format"
    print(f"bench_official: batch {args.batch_size}, {args.threads} threads, {args.rounds} alternating rounds "
          f"of {args.steps} steps after 1 warm-up step each, {layout}, torch {torch.__version__}")
    rows = []
    for name, knobs in CONFIGS:
        if args.only and args.only not in name:
            continue
        torch.manual_seed(0)
        spec = parse(name, **knobs)
        ours = build(name, **knobs)
        official = official_model(official_rkcnn, name, knobs)
        copy_weights(ours, official, spec.steps)
        images = torch.randn(args.batch_size, 3, 32, 32)
        labels = torch.randint(0, spec.num_classes, (args.batch_size,))
        print(f"{spec.canonical}: {check_agree(ours, official, images)}")
        ours_images = images
        if channels_last:  # after the check: the weights were copied and compared in one format
            ours = ours.to(memory_format=torch.channels_last)
            ours_images = images.contiguous(memory_format=torch.channels_last)
        steps = {"ours": trainer(ours, ours_images, labels), "official": trainer(official, images, labels)}
        for step in steps.values():
            step()  # warm-up: allocator, first-call overheads
        seconds: dict[str, list[float]] = {"ours": [], "official": []}
        for r in range(args.rounds):  # who goes first alternates too: the second of a pair runs on a warmer cache
            for who in list(steps)[:: 1 if r % 2 == 0 else -1]:
                seconds[who].append(timed(steps[who], args.steps))
        rate = {who: args.batch_size * args.steps / statistics.median(s) for who, s in seconds.items()}
        rows.append((name, rate["ours"], rate["official"], rate["ours"] / rate["official"]))
        print(f"  ours {rate['ours']:.1f} img/s, official {rate['official']:.1f} img/s, "
              f"ours/official {rate['ours'] / rate['official']:.2f}x", flush=True)
    print("\nmodel           ours img/s  official img/s  ours/official")
    for name, ours_rate, off_rate, ratio in rows:
        print(f"{name:<15} {ours_rate:>10.1f}  {off_rate:>14.1f}  {ratio:>12.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
