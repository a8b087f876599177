"""A registry of model families by name, in the style of timm's ``create_model``.

Every name a user can write, an RKCNN form or a baseline, belongs to one registered `Family`.
The family turns the name plus knobs into a typed spec (a `ModelSpec`: a frozen, hashable
value with the paper's name, a canonical string and the input size its costs are quoted at),
builds the spec into an ``nn.Module``, and may count it in closed form (`Family.tally`);
the cost model (`rksearch.models.cost`) traces the built model of a family that cannot.
Each family registers itself in the module that defines its model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from torch import nn

from rksearch.models.knobs import SpecError


class ModelSpec(Protocol):
    """What a family's `parse` returns: one model, exactly, as a frozen and hashable value."""

    #: the registered name of its family
    family: str

    @property
    def name(self) -> str:
        """The paper's name of the model."""

    @property
    def canonical(self) -> str:
        """Name plus every knob: one string per spec, which the family parses back to the spec."""

    @property
    def default_image_size(self) -> int:
        """The input side the model is made for, at which its costs are quoted."""


@dataclass(frozen=True)
class Family:
    """One family of model names and what the library does with them.

    name     how errors and `families()` call it ('RKCNN', 'DenseNet-BC', ...)
    example  one of its names, quoted when a name matches no family
    matches  whether a name (with or without a knob list) is this family's; never raises
    parse    ``(name, **knobs) -> ModelSpec``, validated
    build    ``(spec, memory_efficient) -> nn.Module``
    tally    ``(spec, image_size) -> rksearch.models.cost.Tally``: the spec counted in closed
             form, without building it; None to have the cost model trace the built model
    """

    name: str
    example: str
    matches: Callable[[str], bool]
    parse: Callable[..., ModelSpec]
    build: Callable[[Any, bool], nn.Module]
    tally: Callable[[Any, int], Any] | None = None


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make `family`'s names known to `build`, `model_spec` and the cost model."""
    _FAMILIES[family.name] = family
    return family


def families() -> list[Family]:
    """Every registered family, in the order they were registered."""
    return list(_FAMILIES.values())


def find_family(name: str) -> Family:
    """The family a model name belongs to; the error for a name of none lists an example of each."""
    for family in _FAMILIES.values():
        if family.matches(name):
            return family
    examples = "; ".join(f"{f.name}: '{f.example}'" for f in _FAMILIES.values())
    raise SpecError(f"unknown model name {name!r}; known families: {examples}")


def family_of(spec: ModelSpec) -> Family:
    """The registered family of a spec."""
    family = _FAMILIES.get(getattr(spec, "family", None))  # type: ignore[arg-type]
    if family is None:
        raise SpecError(f"{spec!r} is not a spec of a registered model family")
    return family


def model_spec(name_or_spec: str | ModelSpec, **knobs: Any) -> ModelSpec:
    """The typed spec of any model name plus knobs; a spec is passed through (knobs then go in the spec)."""
    if isinstance(name_or_spec, str):
        name = name_or_spec.strip()
        return find_family(name).parse(name, **knobs)
    if knobs:
        raise SpecError(f"knobs {sorted(knobs)} given with a spec; put them in the spec instead")
    family_of(name_or_spec)  # a spec of no registered family is refused here, not deep in a build
    return name_or_spec


def build(name_or_spec: str | ModelSpec, memory_efficient: bool = False, **knobs: Any) -> nn.Module:
    """Build a model from a spec, or from any family's name plus knobs.

    ``memory_efficient`` recomputes the dense concatenations in the backward pass instead of
    storing them (same maths, less memory); families without such layers ignore it.
    """
    spec = model_spec(name_or_spec, **knobs)
    return family_of(spec).build(spec, memory_efficient)


__all__ = ["Family", "ModelSpec", "build", "families", "family_of", "find_family", "model_spec", "register_family"]
