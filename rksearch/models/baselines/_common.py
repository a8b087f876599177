"""What the baseline specs share: knobs beside the name or in ``(key=value, ...)``, data sets,
canonical strings.

Every baseline spec is a frozen dataclass with ``name`` (the paper's name), ``canonical``
(name plus every knob, so ``parse(spec.canonical) == spec``) and ``build()``.  The knob
rules mirror those of the RKCNN names so a study can treat both alike.
"""

from __future__ import annotations

from typing import Any

from rksearch.models.naming import DATASETS, _fmt, _parse_value, _split_knobs
from rksearch.models.spec import SpecError


def base_name(text: str) -> str:
    """The name without its ``(knob=value, ...)`` list; family matchers use it and never raise."""
    return text.split("(", 1)[0].strip()


def gather_knobs(family: str, text: str, knobs: dict[str, Any], allowed: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Split ``text`` into its base name and embedded knobs, merged with the knobs given beside it.

    A knob given both ways must agree; a knob set to None counts as not given.
    """
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise SpecError(f"{family}: unknown knob(s) {unknown}; allowed: {', '.join(allowed)}")
    base, embedded = _split_knobs(text.strip(), allowed)
    given = {k: _parse_value(v) if isinstance(v, str) else v for k, v in knobs.items() if v is not None}
    for key, value in embedded.items():
        if key in given and given[key] != value:
            raise SpecError(f"{key}: the name says {value!r} but {given[key]!r} was given beside it")
        given.setdefault(key, value)
    return base, given


def num_classes(family: str, given: dict[str, Any], stem: str) -> int:
    """Classes from ``num_classes`` or else the data set; data set and stem must suit the family's input size.

    A baseline's stem is fixed by its name, so ``stem`` is only checked: a study can pass the
    same knobs to every family and still hear about a CIFAR form asked to take ImageNet input.
    """
    hint = ("for ImageNet use DenseNet-121/161/169/201" if stem == "cifar"
            else "for 32x32 data use a CIFAR form such as DenseNet-BC-100")
    if given.get("stem", stem) != stem:
        raise SpecError(f"{family}: stem {given['stem']!r} given, but this form has the {stem} stem ({hint})")
    allowed = [name for name, (s, _) in DATASETS.items() if s == stem]
    dataset = given.get("dataset")
    if dataset is not None and dataset not in allowed:
        raise SpecError(f"{family}: dataset {dataset!r} is not one of {', '.join(allowed)} ({hint})")
    default = DATASETS[dataset or allowed[0]][1]
    return as_int(family, "num_classes", given.get("num_classes", default), minimum=2)


def as_int(family: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{family}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def as_dropout(family: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise SpecError(f"{family}: dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def canonical(name: str, **knobs: Any) -> str:
    """``Name (key=value, ...)`` in the order given: one string per spec."""
    return f"{name} (" + ", ".join(f"{k}={_fmt(v)}" for k, v in knobs.items()) + ")"
