"""Pre-activation ResNet (He et al. 2016b) and LM-ResNet (Lu et al. 2018), CIFAR forms.

A pre-activation ResNet is the forward-Euler (RK1) member of the RKCNN family:
x_{n+1} = x_n + f(x_n).  LM-ResNet takes the linear two-step scheme
x_{n+1} = (1 - k_n) x_n + k_n x_{n-1} + f(x_n) with one learned scalar k_n per block,
initialised uniform(-0.1, 0) as in the paper's code (``2prime/LM-ResNet``, whose ``ks`` are
1 - k_n drawn from uniform(1, 1.1)).  Both share one residual block and one network class.

Layout (depth = 6n + 2): 3x3 conv stem (3 -> 16), 3 stages of n basic blocks of widths 16,
32, 64 (the first block of stages 2 and 3 halves the resolution), BN-ReLU-GAP-FC.  A block
that changes shape projects its shortcut with a 1x1 strided conv on the pre-activated input.

x_{n-1} for block n is the previous block's shortcut value (its input, or the projection of
its input): the previous state expressed in the current state's space, as in the LM-ResNet
code.  A block that changes shape itself, and the first block, have no x_{n-1} of their own
shape and take the plain residual step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from rksearch.models.baselines._common import as_int, num_classes
from rksearch.models.knobs import SpecError, base_name, canonical, merge_knobs
from rksearch.models.layers import BNReLUConv, MultiscaleHead, init_weights, make_stem
from rksearch.models.registry import Family, register_family

WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class ResNetSpec:
    """PreActResNet-<depth> (multistep False) or LM-ResNet-<depth> (multistep True)."""

    depth: int
    multistep: bool = False
    num_classes: int = 10

    #: the registered families: one spec class serves both, `multistep` telling them apart
    PREACT: ClassVar[str] = "PreActResNet"
    LM: ClassVar[str] = "LM-ResNet"
    KNOBS: ClassVar[tuple[str, ...]] = ("dataset", "num_classes", "stem")
    #: the input size its costs are quoted at (its stem is fixed by the name)
    default_image_size: ClassVar[int] = 32
    NAME_RE: ClassVar[re.Pattern[str]] = re.compile(rf"^(?P<family>{PREACT}|{LM})-(?P<depth>\d+)$")
    HELP: ClassVar[str] = (f"expected '{PREACT}-<depth>' or '{LM}-<depth>' with depth = 6n + 2, "
                           f"n >= 1, e.g. '{PREACT}-110', '{LM}-56'")

    def __post_init__(self) -> None:
        as_int(self.family, "depth", self.depth, minimum=8)
        if (self.depth - 2) % 6:
            raise SpecError(f"{self.family}: depth {self.depth} is not 6n + 2; {self.HELP}")
        as_int(self.family, "num_classes", self.num_classes, minimum=2)

    @staticmethod
    def matches_preact(text: str) -> bool:
        return base_name(text).startswith(ResNetSpec.PREACT)

    @staticmethod
    def matches_lm(text: str) -> bool:
        return base_name(text).startswith(ResNetSpec.LM)

    @classmethod
    def parse(cls, text: str, **knobs: Any) -> "ResNetSpec":
        family = cls.LM if cls.matches_lm(text) else cls.PREACT
        base, given = merge_knobs(family, text, knobs, cls.KNOBS)
        m = cls.NAME_RE.match(base)
        if m is None:
            raise SpecError(f"bad {family} name {text!r}: {cls.HELP}")
        return cls(int(m["depth"]), m["family"] == cls.LM, num_classes(family, given, "cifar"))

    @property
    def family(self) -> str:
        return self.LM if self.multistep else self.PREACT

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 2) // 6

    @property
    def name(self) -> str:
        return f"{self.family}-{self.depth}"

    @property
    def canonical(self) -> str:
        return canonical(self.name, num_classes=self.num_classes)


class PreActBlock(nn.Module):
    """Basic pre-activation block: f(x) = conv3x3(BN-ReLU(conv3x3(BN-ReLU(x)))), plus its shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.second = BNReLUConv(out_ch, out_ch, 3)
        changes_shape = stride != 1 or in_ch != out_ch
        self.project = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if changes_shape else None

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shortcut, f(x)); the shortcut is x itself unless the block changes shape."""
        a = F.relu(self.norm(x))
        shortcut = x if self.project is None else self.project(a)
        return shortcut, self.second(self.conv(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut, residual = self.branches(x)
        return shortcut + residual


class PreActResNet(nn.Module):
    """Pre-activation ResNet; with ``spec.multistep`` the LM-ResNet two-step update."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.stem = make_stem("cifar", WIDTHS[0])
        blocks, channels = [], WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            for i in range(spec.blocks_per_stage):
                blocks.append(PreActBlock(channels, width, 2 if stage > 0 and i == 0 else 1))
                channels = width
        self.blocks = nn.ModuleList(blocks)
        # k_n, keyed by block index, for every block that has an x_{n-1} of its own shape
        self.lm_k = nn.ParameterDict({
            str(i): nn.Parameter(torch.empty(()).uniform_(-0.1, 0.0))
            for i, block in enumerate(blocks)
            if spec.multistep and i > 0 and block.project is None
        })
        self.head = MultiscaleHead([channels], spec.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        previous = x
        for i, block in enumerate(self.blocks):
            shortcut, residual = block.branches(x)
            k = self.lm_k[str(i)] if str(i) in self.lm_k else None
            x = shortcut + residual if k is None else (1 - k) * shortcut + k * previous + residual
            previous = shortcut
        return self.head([x])


def build_resnet(spec: ResNetSpec, memory_efficient: bool = False) -> PreActResNet:
    """`memory_efficient` is accepted for a uniform interface: these blocks have no concatenation to recompute."""
    return PreActResNet(spec)


register_family(Family(name=ResNetSpec.PREACT, example=f"{ResNetSpec.PREACT}-110",
                       matches=ResNetSpec.matches_preact, parse=ResNetSpec.parse, build=build_resnet))
register_family(Family(name=ResNetSpec.LM, example=f"{ResNetSpec.LM}-110", matches=ResNetSpec.matches_lm,
                       parse=ResNetSpec.parse, build=build_resnet))
