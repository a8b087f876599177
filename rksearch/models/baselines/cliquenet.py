"""CliqueNet, CIFAR form (Yang et al., CVPR 2018), as in its paper and reference code.

Settings followed (the paper's CIFAR models, checked against the reference code
``iboing/CliqueNet``, ``models/cliquenet.py`` + ``models/utils.py``):

* stem: 3x3 conv, 3 -> 64 channels, no bias, no BN/ReLU;
* 3 clique blocks of T/3 layers with growth k (default 36): stage I grows each layer from the
  block input X0 and the earlier layers, then one stage-II pass re-updates every layer, in
  order, from the latest values of all others; each kernel W(j -> i) is one tensor used by
  both stages.  This is exactly the ICLR IRKNet clique block, so `CliqueStep` is reused (its
  `refine` gives the stage-II features; CliqueNet has no RK summation);
* the "II+II" variant, the paper's final one: the transition and the classifier both see
  stage-II features;
* transition: BN-ReLU-1x1 conv over the stage-II features (T/3 * k -> T/3 * k channels),
  [A: channel attention], 2x2 average pooling -- X0 is not passed on;
* multiscale head: for each block, the block feature {X0, stage II} -> [C: BN-ReLU-1x1 conv
  to half the channels] -> BN-ReLU-global average pool; concatenated; one linear layer.

Options (name suffix): A = attentional transition, B = bottleneck (the shared kernels become
1x1 with k outputs, then a per-layer BN-ReLU-3x3 conv k -> k shared by both stages),
C = compression of the block feature before global pooling (CliqueNet's "compression" acts on
the features fed to the classifier, not on the transitions).  Dropout (the paper's keep
probability 0.8 is ``dropout=0.2``) is off unless asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from rksearch.models.baselines._common import as_dropout, as_int, num_classes
from rksearch.models.blocks import CliqueStep
from rksearch.models.knobs import SpecError, base_name, canonical, merge_knobs
from rksearch.models.layers import (
    BNReLUConv,
    MultiscaleHead,
    Transition,
    init_weights,
    make_stem,
)
from rksearch.models.registry import Family, register_family

#: channels of the stem conv on CIFAR/SVHN (reference code: first_transit(..., channels=64))
STEM_CHANNELS = 64
OPTIONS = "ABC"


@dataclass(frozen=True)
class CliqueNetSpec:
    """CliqueNet with T layers over 3 blocks, growth k and options A/B/C."""

    layers: int
    growth: int = 36
    attention: bool = False
    bottleneck: bool = False
    compression: bool = False
    num_classes: int = 10
    dropout: float = 0.0

    family: ClassVar[str] = "CliqueNet"
    #: the input size its costs are quoted at (its stem is fixed by the name)
    default_image_size: ClassVar[int] = 32
    KNOBS: ClassVar[tuple[str, ...]] = ("k", "dataset", "num_classes", "stem", "dropout")
    NAME_RE: ClassVar[re.Pattern[str]] = re.compile(r"^CliqueNet-T(?P<layers>\d+)(?:-(?P<options>[A-Za-z]+))?$")
    HELP: ClassVar[str] = ("expected 'CliqueNet-T<T>' with T = 3n, n >= 2 layers per block, optionally "
                           "with a suffix of options A (attentional transition), B (bottleneck), "
                           "C (compression), e.g. 'CliqueNet-T12' or 'CliqueNet-T30-ABC'; k beside the name")

    def __post_init__(self) -> None:
        as_int(self.family, "T", self.layers, minimum=6)
        if self.layers % 3:
            raise SpecError(f"{self.family}: T = {self.layers} is not divisible by the 3 blocks; {self.HELP}")
        as_int(self.family, "k", self.growth, minimum=1)
        as_int(self.family, "num_classes", self.num_classes, minimum=2)
        object.__setattr__(self, "dropout", as_dropout(self.family, self.dropout))

    @staticmethod
    def matches(text: str) -> bool:
        return base_name(text).startswith("CliqueNet")

    @classmethod
    def parse(cls, text: str, **knobs: Any) -> "CliqueNetSpec":
        base, given = merge_knobs(cls.family, text, knobs, cls.KNOBS)
        m = cls.NAME_RE.match(base)
        if m is None:
            raise SpecError(f"bad {cls.family} name {text!r}: {cls.HELP}")
        options = m["options"] or ""
        if set(options) - set(OPTIONS) or len(set(options)) != len(options):
            raise SpecError(f"{cls.family}: options suffix '-{options}' must use each of A, B, C at most once")
        return cls(int(m["layers"]), given.get("k", 36), "A" in options, "B" in options, "C" in options,
                   num_classes(cls.family, given, "cifar"), given.get("dropout", 0.0))

    @property
    def layers_per_block(self) -> int:
        return self.layers // 3

    @property
    def options(self) -> str:
        flags = (self.attention, self.bottleneck, self.compression)
        return "".join(letter for letter, on in zip(OPTIONS, flags) if on)

    @property
    def name(self) -> str:
        return f"CliqueNet-T{self.layers}" + (f"-{self.options}" if self.options else "")

    @property
    def canonical(self) -> str:
        return canonical(self.name, k=self.growth, num_classes=self.num_classes, dropout=self.dropout)


class CliqueNet(nn.Module):
    """CliqueNet (II+II: stage-II features both transited and fed to the head), CIFAR form."""

    def __init__(self, spec: CliqueNetSpec, memory_efficient: bool = False) -> None:
        super().__init__()
        self.spec = spec
        n, k = spec.layers_per_block, spec.growth
        transit = n * k
        inputs = [STEM_CHANNELS, transit, transit]
        self.stem = make_stem("cifar", STEM_CHANNELS)
        self.blocks = nn.ModuleList(
            CliqueStep(c, k, n, k if spec.bottleneck else None, spec.dropout, memory_efficient) for c in inputs
        )
        self.transitions = nn.ModuleList(
            Transition(transit, transit, spec.attention, spec.dropout) for _ in inputs[1:]
        )
        features = [c + transit for c in inputs]
        if spec.compression:
            self.compress = nn.ModuleList(BNReLUConv(c, c // 2, 1, spec.dropout) for c in features)
            features = [c // 2 for c in features]
        else:
            self.compress = None
        self.head = MultiscaleHead(features, spec.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        block_features = []
        for b, block in enumerate(self.blocks):
            transit = torch.cat(block.refine(x), 1)
            feature = torch.cat([x, transit], 1)
            block_features.append(feature if self.compress is None else self.compress[b](feature))
            if b < len(self.transitions):
                x = self.transitions[b](transit)
        return self.head(block_features)


#: `memory_efficient`: the clique blocks recompute their concatenations in the backward pass
register_family(Family(name=CliqueNetSpec.family, example="CliqueNet-T12", matches=CliqueNetSpec.matches,
                       parse=CliqueNetSpec.parse, build=CliqueNet))
