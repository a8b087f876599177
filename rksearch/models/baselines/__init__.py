"""Baselines for Figure-4-style comparisons (rkcnn.md section 8), registered by name on import.

    DenseNet-BC-100 (k=12)            CIFAR DenseNet-BC (Huang et al. 2017)
    DenseNet-121/161/169/201          torchvision's ImageNet DenseNets (weights=None)
    CliqueNet-T12, CliqueNet-T30-ABC  CIFAR CliqueNet (Yang et al. 2018), k beside the name
    PreActResNet-110                  pre-activation ResNet (He et al. 2016b), the RK1 member
    LM-ResNet-110                     linear multi-step ResNet (Lu et al. 2018)

`parse(name, **knobs)` gives a baseline's typed spec (``name``, ``canonical``, ``build()``);
`rksearch.models.build(name, **knobs)` builds any of them.
"""

from __future__ import annotations

from typing import Any, Union

from rksearch.models.baselines.cliquenet import CliqueNet, CliqueNetSpec
from rksearch.models.baselines.densenet import DenseNetBC, DenseNetBCSpec, ImageNetDenseNetSpec
from rksearch.models.baselines.resnet import PreActResNet, ResNetSpec
from rksearch.models.spec import SpecError

BaselineSpec = Union[DenseNetBCSpec, ImageNetDenseNetSpec, CliqueNetSpec, ResNetSpec]

_MATCHERS = (
    (DenseNetBCSpec.matches, DenseNetBCSpec),
    (ImageNetDenseNetSpec.matches, ImageNetDenseNetSpec),
    (CliqueNetSpec.matches, CliqueNetSpec),
    (ResNetSpec.matches_preact, ResNetSpec),
    (ResNetSpec.matches_lm, ResNetSpec),
)


def parse(text: str, **knobs: Any) -> BaselineSpec:
    """The typed spec of a baseline name (knobs beside it or in a trailing ``(key=value, ...)``)."""
    for matches, spec_type in _MATCHERS:
        if matches(text):
            return spec_type.parse(text, **knobs)
    raise SpecError(
        f"unknown baseline {text!r}; expected DenseNet-BC-<depth>, DenseNet-121/161/169/201, "
        "CliqueNet-T<T>[-ABC], PreActResNet-<depth> or LM-ResNet-<depth>"
    )


__all__ = [
    "BaselineSpec", "CliqueNet", "CliqueNetSpec", "DenseNetBC", "DenseNetBCSpec", "ImageNetDenseNetSpec",
    "PreActResNet", "ResNetSpec", "parse",
]
