"""A registry of model families by name, in the style of timm's ``create_model``.

A family registers a predicate that recognises its names and a builder
``(name, **knobs) -> nn.Module``.  `build` accepts a name or an `ArchSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from rksearch.models.spec import ArchSpec, SpecError


@dataclass(frozen=True)
class Family:
    name: str
    matches: Callable[[str], bool]
    builder: Callable[..., nn.Module]
    example: str


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, matches: Callable[[str], bool], example: str) -> Callable:
    """Decorator: register `builder(name, **knobs)` for names that `matches` accepts."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _FAMILIES[name] = Family(name, matches, builder, example)
        return builder

    return wrap


def families() -> list[Family]:
    return list(_FAMILIES.values())


def find_family(name: str) -> Family:
    for family in _FAMILIES.values():
        if family.matches(name):
            return family
    examples = "; ".join(f"{f.name}: '{f.example}'" for f in _FAMILIES.values())
    raise SpecError(f"unknown model name {name!r}; known families: {examples}")


def build(name_or_spec: str | ArchSpec, memory_efficient: bool = False, **knobs: Any) -> nn.Module:
    """Build a model from an RKCNN spec, an RKCNN name plus knobs, or a baseline's name."""
    from rksearch.models.rkcnn import RKCNN

    if isinstance(name_or_spec, ArchSpec):
        if knobs:
            raise SpecError(f"knobs {sorted(knobs)} given with a spec; put them in the spec instead")
        return RKCNN(name_or_spec, memory_efficient=memory_efficient)
    family = find_family(name_or_spec.strip())
    return family.builder(name_or_spec.strip(), memory_efficient=memory_efficient, **knobs)
