"""Baselines for Figure-4-style comparisons (docs/models.md, "Baselines"), registered by name on import.

    DenseNet-BC-100 (k=12)            CIFAR DenseNet-BC (Huang et al. 2017)
    DenseNet-121/161/169/201          torchvision's ImageNet DenseNets (weights=None)
    CliqueNet-T12, CliqueNet-T30-ABC  CIFAR CliqueNet (Yang et al. 2018), k beside the name
    PreActResNet-110                  pre-activation ResNet (He et al. 2016b), the RK1 member
    LM-ResNet-110                     linear multi-step ResNet (Lu et al. 2018)

`parse(name, **knobs)` gives a baseline's typed spec (``name``, ``canonical``,
``default_image_size``); `rksearch.models.build(name, **knobs)` builds any of them.
"""

from __future__ import annotations

from typing import Any, Union

from rksearch.models.baselines.cliquenet import CliqueNet, CliqueNetSpec
from rksearch.models.baselines.densenet import (
    DenseNetBC,
    DenseNetBCSpec,
    ImageNetDenseNetSpec,
)
from rksearch.models.baselines.resnet import PreActResNet, ResNetSpec
from rksearch.models.knobs import SpecError
from rksearch.models.registry import find_family

BaselineSpec = Union[DenseNetBCSpec, ImageNetDenseNetSpec, CliqueNetSpec, ResNetSpec]

#: the registered families this package defines
FAMILIES: tuple[str, ...] = (DenseNetBCSpec.family, ImageNetDenseNetSpec.family, CliqueNetSpec.family,
                             ResNetSpec.PREACT, ResNetSpec.LM)


def parse(text: str, **knobs: Any) -> BaselineSpec:
    """The typed spec of a baseline name (knobs beside it or in a trailing ``(key=value, ...)``)."""
    family = find_family(text.strip())
    if family.name not in FAMILIES:
        raise SpecError(f"{text!r} is a {family.name} name, not a baseline's; "
                        f"baselines: {', '.join(FAMILIES)}")
    return family.parse(text.strip(), **knobs)


__all__ = [
    "BaselineSpec", "CliqueNet", "CliqueNetSpec", "DenseNetBC", "DenseNetBCSpec", "FAMILIES",
    "ImageNetDenseNetSpec", "PreActResNet", "ResNetSpec", "parse",
]
