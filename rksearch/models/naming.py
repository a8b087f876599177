"""Model names <-> `ArchSpec`, both ways.

Two naming families (rkcnn.md section 5):

* ICLR: ``ERKNet-6x1 6x1 6x1``, ``IRKNet-5x1 5x1 5x1-AB``: one ``s x r`` term per period,
  suffix A = attentional transition, B = bottleneck.
* 2022: ``RKCNN-E-5_5_5``, ``RKCNN-I-3_3_3``, ``RKCNN-R-3_3_3``: stages per period; r, u,
  neck and attention are knobs.

Knobs not carried by the name (growth rate k, groups m, ...) are given beside it.
``spec.canonical`` appends every knob in parentheses, e.g.
``ERKNet-6x1 6x1 6x1 (k=36, m=1, num_classes=10, stem=cifar, multiscale=true, dropout=0)``,
and ``parse`` accepts that form too, so any spec round-trips through one string.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from rksearch.models.spec import DEFAULT_NECK, ArchSpec, SpecError

ICLR_RE = re.compile(
    r"^(?P<family>ERKNet|IRKNet)-(?P<terms>\d+\s*[x×]\s*\d+(?:\s+\d+\s*[x×]\s*\d+)*)(?:-(?P<suffix>[AB]+))?$"
)
RKCNN_RE = re.compile(r"^RKCNN-(?P<kind>[EIR])-(?P<stages>\d+(?:_\d+)*)$")
KNOB_RE = re.compile(r"^(?P<name>.*?)\s*\((?P<knobs>[^()]*)\)\s*$")

#: data sets -> (stem, classes, default number of periods)
DATASETS: dict[str, tuple[str, int]] = {
    "cifar10": ("cifar", 10),
    "cifar100": ("cifar", 100),
    "svhn": ("cifar", 10),
    "digits": ("cifar", 10),
    "imagenet": ("imagenet", 1000),
}

#: knobs `parse` takes beside a name; also the keys of the canonical string
KNOBS = ("k", "m", "r", "u", "neck", "attention", "multiscale", "dropout", "num_classes", "stem", "dataset")

NAME_HELP = (
    "expected an ICLR name like 'ERKNet-6x1 6x1 6x1' or 'IRKNet-5x1 5x1 5x1-AB' "
    "(s x r per period, suffix A and/or B) or a 2022 name like 'RKCNN-E-5_5_5', "
    "'RKCNN-I-3_3_3', 'RKCNN-R-3_3_3'"
)


def is_rkcnn_name(text: str) -> bool:
    """True when `text` (optionally with a knob list) is an RKCNN family name."""
    base = _split_knobs(text.strip())[0]
    return bool(ICLR_RE.match(base) or RKCNN_RE.match(base))


def parse(text: str, **knobs: Any) -> ArchSpec:
    """Parse a model name (plus knobs given beside it) into a validated spec.

    Knobs: k (growth rate: int or one per period), m (groups: int or per period),
    r (time-steps, 2022 names only), u (update iterations, RKCNN-I/R), neck (bottleneck
    width as a multiple of k), attention, multiscale, dropout, num_classes, stem,
    dataset (cifar10 | cifar100 | svhn | digits | imagenet: sets stem and classes).
    A knob set to None counts as not given.
    """
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise SpecError(f"unknown knob(s) {unknown}; allowed: {', '.join(KNOBS)}")
    base, embedded = _split_knobs(text.strip())
    given = {k: v for k, v in knobs.items() if v is not None}
    for key, value in embedded.items():
        if key in given and _as_tuple(given[key]) != _as_tuple(value):
            raise SpecError(f"{key}: the name says {value!r} but {given[key]!r} was given beside it")
        given.setdefault(key, value)

    stem, num_classes = _dataset_defaults(given)
    if (m := ICLR_RE.match(base)) is not None:
        terms = [re.split(r"\s*[x×]\s*", t) for t in m["terms"].split()]
        stages = tuple(int(s) for s, _ in terms)
        steps = tuple(int(r) for _, r in terms)
        if "r" in given and _per_period(given["r"], len(stages), "r") != steps:
            raise SpecError(f"r: the name gives r = {steps}; do not also pass r={given['r']!r}")
        suffix = m["suffix"] or ""
        if len(set(suffix)) != len(suffix):
            raise SpecError(f"suffix: repeated letter in '-{suffix}'; allowed letters: A, B")
        form = "explicit" if m["family"] == "ERKNet" else "clique"
        style, solver = "iclr", "gauss-seidel"
        attention = _flag(given, "attention", "A" in suffix, "A")
        has_b = "B" in suffix or given.get("neck") is not None
        if "u" in given and given["u"] not in (0, None):
            raise SpecError(f"u: update iterations exist only for RKCNN-I/RKCNN-R, not {m['family']}")
        iterations: tuple[int, ...] = ()
    elif (m := RKCNN_RE.match(base)) is not None:
        stages = tuple(int(s) for s in m["stages"].split("_"))
        steps = _per_period(given.get("r", 1), len(stages), "r")
        kind = m["kind"]
        form = "explicit" if kind == "E" else "update"
        solver = "jacobi" if kind == "R" else "gauss-seidel"
        style = "rkcnn"
        attention = bool(given.get("attention", False))
        has_b = given.get("neck") is not None
        if kind == "E":
            if given.get("u") not in (None, 0):
                raise SpecError("u: RKCNN-E is the u = 0 member; update iterations need RKCNN-I or RKCNN-R")
            iterations = ()
        else:
            iterations = _per_period(given.get("u", 1), len(stages), "u")
    else:
        raise SpecError(f"bad model name {text!r}: {NAME_HELP}")

    periods = len(stages)
    default_k = 32 if stem == "imagenet" else 36
    default_m: Any = (2, 4, 8, 16)[:periods] if stem == "imagenet" and periods <= 4 else 1
    neck = given.get("neck")
    if has_b and neck is None:
        neck = DEFAULT_NECK[form]
    return ArchSpec(
        stages=stages,
        steps=steps,
        growth=_per_period(given.get("k", default_k), periods, "k"),
        groups=_per_period(given.get("m", default_m), periods, "m"),
        form=form,  # type: ignore[arg-type]
        solver=solver,  # type: ignore[arg-type]
        iterations=iterations,
        neck=_int_or_none(neck, "neck"),
        attention=attention,
        multiscale=_bool(given.get("multiscale", stem != "imagenet"), "multiscale"),
        dropout=float(given.get("dropout", 0.0)),
        stem=stem,  # type: ignore[arg-type]
        num_classes=int(num_classes),
        style=style,  # type: ignore[arg-type]
    )


def format_name(spec: ArchSpec) -> str:
    """The paper's name of `spec` (knobs not carried by the name are left out)."""
    if spec.style == "iclr":
        family = "ERKNet" if spec.form == "explicit" else "IRKNet"
        terms = " ".join(f"{s}x{r}" for s, r in zip(spec.stages, spec.steps))
        suffix = ("A" if spec.attention else "") + ("B" if spec.bottleneck else "")
        return f"{family}-{terms}" + (f"-{suffix}" if suffix else "")
    kind = "E" if spec.form == "explicit" else ("R" if spec.solver == "jacobi" else "I")
    return f"RKCNN-{kind}-" + "_".join(str(s) for s in spec.stages)


def format_canonical(spec: ArchSpec) -> str:
    """Name plus every knob, in a fixed order: one string per spec."""
    knobs: list[tuple[str, str]] = [("k", _fmt(spec.growth)), ("m", _fmt(spec.groups))]
    if spec.style == "rkcnn":
        knobs.append(("r", _fmt(spec.steps)))
        if spec.form == "update":
            knobs.append(("u", _fmt(spec.iterations)))
        knobs.append(("attention", _fmt(spec.attention)))
    if spec.neck is not None:
        knobs.append(("neck", str(spec.neck)))
    knobs += [
        ("num_classes", str(spec.num_classes)),
        ("stem", spec.stem),
        ("multiscale", _fmt(spec.multiscale)),
        ("dropout", _fmt(spec.dropout)),
    ]
    return f"{format_name(spec)} (" + ", ".join(f"{k}={v}" for k, v in knobs) + ")"


# ---- helpers -----------------------------------------------------------------
def _split_knobs(text: str, allowed: tuple[str, ...] = KNOBS) -> tuple[str, dict[str, Any]]:
    """'Name (key=value, ...)' -> ('Name', {key: value}); `allowed` lists the keys the caller's family takes."""
    m = KNOB_RE.match(text)
    if m is None:
        return text, {}
    knobs: dict[str, Any] = {}
    # knob values may contain commas (k=12,24,48), so split on ', key=' boundaries
    for key, value in re.findall(r"(\w+)=([^=]*?)(?=,\s*\w+=|$)", m["knobs"].strip()):
        if key not in allowed:
            raise SpecError(f"unknown knob {key!r} in {text!r}; allowed: {', '.join(allowed)}")
        knobs[key] = _parse_value(value.strip())
    return m["name"].strip(), knobs


def _parse_value(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if "," in value:
        return tuple(int(v) for v in value.split(","))
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _dataset_defaults(given: dict[str, Any]) -> tuple[str, int]:
    dataset = given.get("dataset")
    if dataset is not None:
        if dataset not in DATASETS:
            raise SpecError(f"dataset: {dataset!r} is not one of {', '.join(DATASETS)}")
        stem, classes = DATASETS[dataset]
    else:
        stem, classes = given.get("stem", "cifar"), (1000 if given.get("stem") == "imagenet" else 10)
    return given.get("stem", stem), given.get("num_classes", classes)


def _per_period(value: Any, periods: int, name: str) -> tuple[int, ...]:
    values = _as_tuple(value)
    if len(values) == 1:
        values = values * periods
    if len(values) != periods:
        raise SpecError(f"{name}: {len(values)} values for {periods} periods; give one, or one per period")
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise SpecError(f"{name}: must be integers, got {value!r}") from None


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)


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


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return str(value[0]) if len(set(value)) == 1 else ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
