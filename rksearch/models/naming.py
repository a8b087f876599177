"""RKCNN model names -> `ArchSpec` (``spec.name`` and ``spec.canonical`` write them back).

Two naming families (docs/models.md, "Names"):

* ICLR: ``ERKNet-6x1 6x1 6x1``, ``IRKNet-5x1 5x1 5x1-AB``: one ``s x r`` term per period,
  suffix A = attentional transition, B = bottleneck.
* 2022: ``RKCNN-E-5_5_5``, ``RKCNN-I-3_3_3``, ``RKCNN-R-3_3_3``: stages per period; r, u,
  neck and attention are knobs.

Knobs not carried by the name (growth rate k, groups m, ...) are given beside it or in a
trailing list, as for every family (`rksearch.models.knobs`); ``spec.canonical`` is the name
with every knob in that list, e.g.
``ERKNet-6x1 6x1 6x1 (k=36, m=1, num_classes=10, stem=cifar, multiscale=true, dropout=0)``,
so any spec round-trips through one string.  A knob left out takes `ArchSpec`'s default.
"""

from __future__ import annotations

import re
from typing import Any

from rksearch.models.knobs import SpecError, as_tuple, base_name, merge_knobs, stem_and_classes
from rksearch.models.spec import DEFAULT_NECK, ArchSpec

ICLR_RE = re.compile(
    r"^(?P<family>ERKNet|IRKNet)-(?P<terms>\d+\s*[x×]\s*\d+(?:\s+\d+\s*[x×]\s*\d+)*)(?:-(?P<suffix>[AB]+))?$"
)
RKCNN_RE = re.compile(r"^RKCNN-(?P<kind>[EIR])-(?P<stages>\d+(?:_\d+)*)$")

#: knobs `parse` takes beside a name; also the keys of the canonical string
KNOBS = ("k", "m", "r", "u", "neck", "attention", "multiscale", "dropout", "num_classes", "stem", "dataset")

NAME_HELP = (
    "expected an ICLR name like 'ERKNet-6x1 6x1 6x1' or 'IRKNet-5x1 5x1 5x1-AB' "
    "(s x r per period, suffix A and/or B) or a 2022 name like 'RKCNN-E-5_5_5', "
    "'RKCNN-I-3_3_3', 'RKCNN-R-3_3_3'"
)


def is_rkcnn_name(text: str) -> bool:
    """True when `text` (optionally with a knob list) is an RKCNN family name; never raises."""
    base = base_name(text)
    return bool(ICLR_RE.match(base) or RKCNN_RE.match(base))


def parse(text: str, **knobs: Any) -> ArchSpec:
    """Parse a model name (plus knobs given beside it) into a validated spec.

    Knobs: k (growth rate: int or one per period), m (groups: int or per period),
    r (time-steps, 2022 names only), u (update iterations, RKCNN-I/R: int or per period,
    0 in a period for no update layers there), neck (bottleneck width as a multiple of k),
    attention, multiscale, dropout, num_classes, stem,
    dataset (cifar10 | cifar100 | svhn | digits | imagenet: sets stem and classes).
    A knob set to None counts as not given.
    """
    base, given = merge_knobs("RKCNN", text, knobs, KNOBS)
    if (m := ICLR_RE.match(base)) is not None:
        fields = _iclr_fields(m, given)
    elif (m := RKCNN_RE.match(base)) is not None:
        fields = _rkcnn_fields(m, given)
    else:
        raise SpecError(f"bad model name {text!r}: {NAME_HELP}")
    periods = len(fields["stages"])
    neck = given.get("neck")
    if fields.pop("bottleneck") and neck is None:
        neck = DEFAULT_NECK[fields["form"]]
    stem, num_classes = stem_and_classes(given)
    return ArchSpec(
        **fields,
        growth=_per_period(given["k"], periods, "k") if "k" in given else None,
        groups=_per_period(given["m"], periods, "m") if "m" in given else None,
        neck=_int_or_none(neck, "neck"),
        multiscale=_bool(given["multiscale"], "multiscale") if "multiscale" in given else None,
        dropout=float(given.get("dropout", 0.0)),
        stem=stem,  # type: ignore[arg-type]
        num_classes=num_classes,
    )


def _iclr_fields(m: re.Match[str], given: dict[str, Any]) -> dict[str, Any]:
    """What an ICLR name (``ERKNet-6x1 6x1 6x1-AB``) says: stages and steps per period, form, A and B."""
    terms = [re.split(r"\s*[x×]\s*", t) for t in m["terms"].split()]
    stages = tuple(int(s) for s, _ in terms)
    steps = tuple(int(r) for _, r in terms)
    if "r" in given and _per_period(given["r"], len(stages), "r") != steps:
        raise SpecError(f"r: the name gives r = {steps}; do not also pass r={given['r']!r}")
    suffix = m["suffix"] or ""
    if len(set(suffix)) != len(suffix):
        raise SpecError(f"suffix: repeated letter in '-{suffix}'; allowed letters: A, B")
    if given.get("u", 0) != 0:
        raise SpecError(f"u: update iterations exist only for RKCNN-I/RKCNN-R, not {m['family']}")
    return {"stages": stages, "steps": steps, "form": "explicit" if m["family"] == "ERKNet" else "clique",
            "style": "iclr", "attention": _flag(given, "attention", "A" in suffix, "A"),
            "bottleneck": "B" in suffix}


def _rkcnn_fields(m: re.Match[str], given: dict[str, Any]) -> dict[str, Any]:
    """What a 2022 name (``RKCNN-I-3_3_3``) and its r, u and attention knobs say."""
    stages = tuple(int(s) for s in m["stages"].split("_"))
    kind = m["kind"]
    if kind == "E" and given.get("u", 0) != 0:
        raise SpecError("u: RKCNN-E is the u = 0 member; update iterations need RKCNN-I or RKCNN-R")
    return {"stages": stages, "steps": _per_period(given.get("r", 1), len(stages), "r"),
            "form": "explicit" if kind == "E" else "update", "solver": "jacobi" if kind == "R" else "gauss-seidel",
            "style": "rkcnn", "iterations": () if kind == "E" else _per_period(given.get("u", 1), len(stages), "u"),
            "attention": _bool(given.get("attention", False), "attention"), "bottleneck": False}


def _per_period(value: Any, periods: int, name: str) -> tuple[int, ...]:
    values = as_tuple(value)
    if len(values) == 1:
        values = values * periods
    if len(values) != periods:
        raise SpecError(f"{name}: {len(values)} values for {periods} periods; give one, or one per period")
    # a float is refused, not truncated: 'r=1.5' must not build r = 1
    if not all(_is_integer(v) for v in values):
        raise SpecError(f"{name}: must be integers, got {value!r}")
    return tuple(int(v) for v in values)


def _is_integer(value: Any) -> bool:
    """An int (not a bool), or the text of one."""
    if isinstance(value, str):
        return value.strip().removeprefix("-").isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(given: dict[str, Any], key: str, from_name: bool, letter: str) -> bool:
    value = given.get(key)
    if value is None:
        return from_name
    value = _bool(value, key)
    if from_name and not value:
        raise SpecError(f"{key}: the name's suffix {letter} turns it on; {key}=false contradicts it")
    return value


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise SpecError(f"{key}: must be true or false, got {value!r}")


def _int_or_none(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.lower().removesuffix("k")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SpecError(f"{key}: must be an integer multiple of k like 4 or '4k', got {value!r}") from None


__all__ = ["KNOBS", "NAME_HELP", "is_rkcnn_name", "parse"]
