"""What every family's names share: knobs, data sets, canonical strings, and the error they raise.

A model is written as a name plus knobs.  Knobs go beside the name (``parse(name, k=36)``), in
a trailing list (``"ERKNet-6x1 6x1 6x1 (k=36, m=1)"``), or both when they agree; a knob set
to None counts as not given.  A spec's ``canonical`` string is its name with every knob in
that list, so one string stands for one spec and parses back to it.  The RKCNN parser
(`rksearch.models.naming`) and the baselines' parsers follow these same rules, so that a
study can hand knobs to any family alike.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from rksearch.errors import RksearchError

#: data set -> (stem, classes): what the ``dataset`` knob sets
DATASETS: dict[str, tuple[str, int]] = {
    "cifar10": ("cifar", 10),
    "cifar100": ("cifar", 100),
    "svhn": ("cifar", 10),
    "digits": ("cifar", 10),
    "imagenet": ("imagenet", 1000),
}

KNOB_LIST_RE = re.compile(r"^(?P<name>.*?)\s*\((?P<knobs>[^()]*)\)\s*$")


class SpecError(RksearchError, ValueError):
    """An impossible architecture or model name: the message names the field and what is allowed."""


def base_name(text: str) -> str:
    """The name without its ``(knob=value, ...)`` list; family matchers use it and never raise."""
    return text.split("(", 1)[0].strip()


def split_knobs(text: str, allowed: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """``'Name (key=value, ...)'`` -> ``('Name', {key: value})``; `allowed` lists the keys the family takes."""
    m = KNOB_LIST_RE.match(text)
    if m is None:
        return text, {}
    allowed = tuple(allowed)
    knobs: dict[str, Any] = {}
    # knob values may contain commas (k=12,24,48), so split on ', key=' boundaries
    for key, value in re.findall(r"(\w+)=([^=]*?)(?=,\s*\w+=|$)", m["knobs"].strip()):
        if key not in allowed:
            raise SpecError(f"unknown knob {key!r} in {text!r}; allowed: {', '.join(allowed)}")
        knobs[key] = parse_value(value.strip())
    return m["name"].strip(), knobs


def merge_knobs(family: str, text: str, knobs: dict[str, Any], allowed: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """Split `text` into its base name and the knobs in it, merged with the `knobs` given beside it.

    Knobs beside the name may be strings (from a command line): they are read as the list's
    values are.  A knob given both ways must agree.
    """
    allowed = tuple(allowed)
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise SpecError(f"{family}: unknown knob(s) {unknown}; allowed: {', '.join(allowed)}")
    base, embedded = split_knobs(text.strip(), allowed)
    given = {k: parse_value(v) if isinstance(v, str) else v for k, v in knobs.items() if v is not None}
    for key, value in embedded.items():
        if key in given and as_tuple(given[key]) != as_tuple(value):
            raise SpecError(f"{key}: the name says {value!r} but {given[key]!r} was given beside it")
        given.setdefault(key, value)
    return base, given


def stem_and_classes(given: dict[str, Any], stem: str = "cifar") -> tuple[str, int | None]:
    """The stem and classes the ``stem``, ``num_classes`` and ``dataset`` knobs ask for: each given
    outright, else the data set's, else `stem` and the classes of its first data set (10 on the
    CIFAR stem, 1000 on ImageNet's; None for a stem no data set has, which the spec refuses).

    Every family reads these knobs here, so that one data set means one stem and one number of
    classes whatever the model; an unknown data set is a SpecError.
    """
    dataset = given.get("dataset")
    if dataset is not None and dataset not in DATASETS:
        raise SpecError(f"dataset: {dataset!r} is not one of {', '.join(DATASETS)}")
    asked = given.get("stem", DATASETS[dataset][0] if dataset else stem)
    default = DATASETS[dataset][1] if dataset else next((c for s, c in DATASETS.values() if s == asked), None)
    return asked, given.get("num_classes", default)


def parse_value(value: str) -> Any:
    """One knob value as written: true/false, none, integers (a comma list: a tuple), floats, else the text."""
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if "," in value:
        try:
            return tuple(int(v) for v in value.split(","))
        except ValueError:
            return value
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def format_value(value: Any) -> str:
    """The knob list's spelling of a value; a per-period tuple whose entries agree is written once."""
    if isinstance(value, tuple):
        return str(value[0]) if len(set(value)) == 1 else ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def canonical(name: str, **knobs: Any) -> str:
    """``Name (key=value, ...)`` in the order given: one string per spec."""
    return f"{name} (" + ", ".join(f"{k}={format_value(v)}" for k, v in knobs.items()) + ")"


def as_tuple(value: Any) -> tuple[Any, ...]:
    """A knob value as a tuple: a comma list split, a scalar as one entry."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)


__all__ = ["DATASETS", "SpecError", "as_tuple", "base_name", "canonical", "format_value", "merge_knobs",
           "parse_value", "split_knobs", "stem_and_classes"]
