"""DenseNets: the CIFAR DenseNet-BC of Huang et al. (2017) and torchvision's ImageNet DenseNets.

In the RK view (rknets paper, section 3.3.1) a dense block is an explicit RK block without
the summation of its increments, so the CIFAR form reuses `ExplicitStep`'s growth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from rksearch.models.baselines._common import as_dropout, as_int, num_classes
from rksearch.models.blocks import ExplicitStep
from rksearch.models.knobs import SpecError, base_name, canonical, merge_knobs
from rksearch.models.layers import MultiscaleHead, Transition, init_weights, make_stem
from rksearch.models.registry import Family, register_family


@dataclass(frozen=True)
class DenseNetBCSpec:
    """DenseNet-BC, CIFAR form: 3 dense blocks of (depth - 4) / 6 bottleneck layers.

    depth   total conv + linear layers (2 per dense layer, stem, 2 transitions, classifier)
    growth  k; the stem has 2k channels and each bottleneck is 4k wide
    The transitions compress by 0.5 (the "C" of BC).
    """

    depth: int
    growth: int = 12
    num_classes: int = 10
    dropout: float = 0.0

    family: ClassVar[str] = "DenseNet-BC"
    #: the input size its costs are quoted at (its stem is fixed by the name)
    default_image_size: ClassVar[int] = 32
    KNOBS: ClassVar[tuple[str, ...]] = ("k", "dataset", "num_classes", "stem", "dropout")
    NAME_RE: ClassVar[re.Pattern[str]] = re.compile(r"^DenseNet-BC-(?P<depth>\d+)$")
    HELP: ClassVar[str] = "expected 'DenseNet-BC-<depth>' with depth = 6n + 4, n >= 1, e.g. 'DenseNet-BC-100'"

    def __post_init__(self) -> None:
        as_int(self.family, "depth", self.depth, minimum=10)
        if (self.depth - 4) % 6:
            raise SpecError(f"{self.family}: depth {self.depth} is not 6n + 4; {self.HELP}")
        as_int(self.family, "k", self.growth, minimum=1)
        as_int(self.family, "num_classes", self.num_classes, minimum=2)
        object.__setattr__(self, "dropout", as_dropout(self.family, self.dropout))

    @staticmethod
    def matches(text: str) -> bool:
        return base_name(text).startswith("DenseNet-BC")

    @classmethod
    def parse(cls, text: str, **knobs: Any) -> "DenseNetBCSpec":
        base, given = merge_knobs(cls.family, text, knobs, cls.KNOBS)
        m = cls.NAME_RE.match(base)
        if m is None:
            raise SpecError(f"bad {cls.family} name {text!r}: {cls.HELP}")
        return cls(int(m["depth"]), given.get("k", 12), num_classes(cls.family, given, "cifar"),
                   given.get("dropout", 0.0))

    @property
    def layers_per_block(self) -> int:
        return (self.depth - 4) // 6

    @property
    def name(self) -> str:
        return f"DenseNet-BC-{self.depth}"

    @property
    def canonical(self) -> str:
        return canonical(self.name, k=self.growth, num_classes=self.num_classes, dropout=self.dropout)


class DenseNetBC(nn.Module):
    """Stem 3x3 conv (3 -> 2k), 3 dense blocks with 0.5-compressing transitions, BN-ReLU-GAP-FC."""

    def __init__(self, spec: DenseNetBCSpec, memory_efficient: bool = False) -> None:
        super().__init__()
        self.spec = spec
        k, n = spec.growth, spec.layers_per_block
        channels = 2 * k
        self.stem = make_stem("cifar", channels)
        blocks, transitions = [], []
        for b in range(3):
            # one stage of n growth layers: layer j sees the input and all j earlier outputs
            blocks.append(ExplicitStep(channels, k, stages=1, groups=n, width=4 * k, dropout=spec.dropout,
                                       memory_efficient=memory_efficient))
            channels += n * k
            if b < 2:
                transitions.append(Transition(channels, channels // 2, attention=False, dropout=spec.dropout))
                channels //= 2
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.head = MultiscaleHead([channels], spec.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b, block in enumerate(self.blocks):
            x = torch.cat([x, *block.grow(x)], 1)
            if b < len(self.transitions):
                x = self.transitions[b](x)
        return self.head([x])


@dataclass(frozen=True)
class ImageNetDenseNetSpec:
    """torchvision's DenseNet-121/161/169/201 (ImageNet form, 224x224), untrained."""

    depth: int
    num_classes: int = 1000
    dropout: float = 0.0

    family: ClassVar[str] = "DenseNet (ImageNet)"
    #: the input size its costs are quoted at: torchvision's 224x224
    default_image_size: ClassVar[int] = 224
    DEPTHS: ClassVar[tuple[int, ...]] = (121, 161, 169, 201)
    KNOBS: ClassVar[tuple[str, ...]] = ("dataset", "num_classes", "stem", "dropout")
    NAME_RE: ClassVar[re.Pattern[str]] = re.compile(r"^DenseNet-(?P<depth>\d+)$")
    HELP: ClassVar[str] = ("expected 'DenseNet-121', 'DenseNet-161', 'DenseNet-169' or 'DenseNet-201' "
                           "(for 32x32 data use 'DenseNet-BC-<depth>')")

    def __post_init__(self) -> None:
        if self.depth not in self.DEPTHS:
            raise SpecError(f"{self.family}: no DenseNet-{self.depth}; {self.HELP}")
        as_int(self.family, "num_classes", self.num_classes, minimum=2)
        object.__setattr__(self, "dropout", as_dropout(self.family, self.dropout))

    @staticmethod
    def matches(text: str) -> bool:
        return re.match(r"^DenseNet-\d", base_name(text)) is not None

    @classmethod
    def parse(cls, text: str, **knobs: Any) -> "ImageNetDenseNetSpec":
        base, given = merge_knobs(cls.family, text, knobs, cls.KNOBS)
        m = cls.NAME_RE.match(base)
        if m is None:
            raise SpecError(f"bad DenseNet name {text!r}: {cls.HELP}")
        return cls(int(m["depth"]), num_classes(cls.family, given, "imagenet"), given.get("dropout", 0.0))

    @property
    def name(self) -> str:
        return f"DenseNet-{self.depth}"

    @property
    def canonical(self) -> str:
        return canonical(self.name, num_classes=self.num_classes, dropout=self.dropout)


def build_imagenet_densenet(spec: ImageNetDenseNetSpec, memory_efficient: bool = False) -> nn.Module:
    """torchvision's builder with weights=None: nothing is downloaded, its own initialisation."""
    from rksearch.models.baselines.torchvision_densenet import (
        densenet,  # imports torchvision: only when built
    )

    return densenet(spec.depth, spec.num_classes, spec.dropout, memory_efficient)


register_family(Family(name=DenseNetBCSpec.family, example="DenseNet-BC-100", matches=DenseNetBCSpec.matches,
                       parse=DenseNetBCSpec.parse, build=DenseNetBC))
register_family(Family(name=ImageNetDenseNetSpec.family, example="DenseNet-121", matches=ImageNetDenseNetSpec.matches,
                       parse=ImageNetDenseNetSpec.parse, build=build_imagenet_densenet))
