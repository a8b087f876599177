"""The typed architecture spec of an RKCNN (see shared/design/rkcnn.md).

`ArchSpec` is a frozen, hashable value: the search space produces it, `cost` prices it
(cached by value), `build` turns it into an `nn.Module`, and `naming` turns it into the
paper's model name and back.  Everything is validated here, once, so that every other
module can trust a spec it is handed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from rksearch.errors import RksearchError

Form = Literal["explicit", "clique", "update"]
Solver = Literal["gauss-seidel", "jacobi"]
Style = Literal["iclr", "rkcnn"]
Stem = Literal["cifar", "imagenet"]

FORMS: tuple[str, ...] = ("explicit", "clique", "update")
SOLVERS: tuple[str, ...] = ("gauss-seidel", "jacobi")
STYLES: tuple[str, ...] = ("iclr", "rkcnn")
STEMS: tuple[str, ...] = ("cifar", "imagenet")

#: bottleneck width (as a multiple of k) that suffix B means when no width is given:
#: 4k for the ICLR ERKNets (Table 3), k for the ICLR IRKNets (Table 2), 4k for RKCNN.
DEFAULT_NECK: dict[str, int] = {"explicit": 4, "clique": 1, "update": 4}


class SpecError(RksearchError, ValueError):
    """An impossible architecture: the message names the field and what is allowed."""


@dataclass(frozen=True)
class ArchSpec:
    """One RKCNN, exactly.

    Per-period tuples all have one entry per period (3 on CIFAR, 4 on ImageNet).

    stages      s_d, RK stages per time-step
    steps       r_d, time-steps per period (each with its own weights)
    growth      k_d, channels grown per composite layer
    groups      m_d, growth layers per stage; the state has C_d = m_d * k_d channels
    form        explicit (ERKNet / RKCNN-E), clique (ICLR IRKNet), update (RKCNN-I/R)
    solver      update form only: gauss-seidel (RKCNN-I) or jacobi (RKCNN-R)
    iterations  u_d, update iterations per period (update form only, >= 1)
    neck        bottleneck width as a multiple of k (None: no bottleneck)
    attention   attentional transition (suffix A)
    multiscale  multiscale feature strategy in the postprocessor
    dropout     drop probability after each conv (0: none; the 2022 code uses 0.2)
    stem        'cifar' (3x3 conv, 32x32 inputs) or 'imagenet' (7x7/2 conv + max-pool)
    num_classes classifier outputs
    style       naming family: 'iclr' (ERKNet/IRKNet) or 'rkcnn' (RKCNN-E/I/R)
    """

    stages: tuple[int, ...]
    steps: tuple[int, ...]
    growth: tuple[int, ...]
    groups: tuple[int, ...]
    form: Form = "explicit"
    solver: Solver = "gauss-seidel"
    iterations: tuple[int, ...] = ()
    neck: int | None = None
    attention: bool = False
    multiscale: bool = True
    dropout: float = 0.0
    stem: Stem = "cifar"
    num_classes: int = 10
    style: Style = "iclr"

    def __post_init__(self) -> None:
        periods = len(self.stages)
        if periods < 1:
            raise SpecError("stages: need at least one period, e.g. (6, 6, 6)")
        for name in ("stages", "steps", "growth", "groups", "iterations"):
            value = getattr(self, name)
            if isinstance(value, int):
                value = (value,) * periods
            value = tuple(value)
            if name == "iterations" and not value:
                value = (1 if self.form == "update" else 0,) * periods
            object.__setattr__(self, name, value)
            if len(value) != periods:
                raise SpecError(
                    f"{name}: {len(value)} values given for {periods} periods; "
                    f"give one per period or a single value for all"
                )
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise SpecError(f"{name}: must be integers, got {value}")
        _check(self.form in FORMS, f"form: {self.form!r} is not one of {', '.join(FORMS)}")
        _check(self.solver in SOLVERS, f"solver: {self.solver!r} is not one of {', '.join(SOLVERS)}")
        _check(self.style in STYLES, f"style: {self.style!r} is not one of {', '.join(STYLES)}")
        _check(self.stem in STEMS, f"stem: {self.stem!r} is not one of {', '.join(STEMS)}")
        _check(all(s >= 1 for s in self.stages), f"stages: every s must be >= 1, got {self.stages}")
        _check(all(r >= 1 for r in self.steps), f"steps: every r must be >= 1, got {self.steps}")
        _check(all(k >= 1 for k in self.growth), f"growth: every k must be >= 1, got {self.growth}")
        _check(all(m >= 1 for m in self.groups), f"groups: every m must be >= 1, got {self.groups}")
        if self.form == "clique":
            _check(
                all(m == 1 for m in self.groups),
                f"groups: the clique form (IRKNet) needs m = 1 in every period (paper Rule 4), got {self.groups}",
            )
            _check(self.style == "iclr", "style: the clique form is the ICLR IRKNet; use style 'iclr'")
            _check(
                all(s >= 2 for s in self.stages),
                f"stages: the clique form needs s >= 2 (stage II updates each stage from the others), got {self.stages}",
            )
        if self.form == "update":
            _check(
                all(u >= 1 for u in self.iterations),
                f"iterations: the update form needs u >= 1 in every period, got {self.iterations}",
            )
            _check(self.style == "rkcnn", "style: the update form is RKCNN-I/R; use style 'rkcnn'")
        else:
            _check(
                all(u == 0 for u in self.iterations),
                f"iterations: only the update form (RKCNN-I/R) has update iterations; got {self.iterations} "
                f"for form {self.form!r}",
            )
            _check(self.solver == "gauss-seidel", "solver: only the update form can use 'jacobi' (RKCNN-R)")
        _check(self.neck is None or (isinstance(self.neck, int) and self.neck >= 1),
               f"neck: bottleneck width multiple must be an integer >= 1 or None, got {self.neck!r}")
        _check(0.0 <= self.dropout < 1.0, f"dropout: must be in [0, 1), got {self.dropout}")
        _check(isinstance(self.num_classes, int) and self.num_classes >= 2,
               f"num_classes: must be an integer >= 2, got {self.num_classes!r}")
        _check(isinstance(self.attention, bool), f"attention: must be true or false, got {self.attention!r}")
        _check(isinstance(self.multiscale, bool), f"multiscale: must be true or false, got {self.multiscale!r}")
        if self.attention:
            _check(
                all(m * k >= 2 for m, k in zip(self.groups[1:], self.growth[1:])),
                "attention: the attentional transition halves the channels; needs m*k >= 2",
            )

    # ---- derived quantities -------------------------------------------------
    @property
    def periods(self) -> int:
        return len(self.stages)

    @property
    def channels(self) -> tuple[int, ...]:
        """C_d = m_d * k_d, the state width of each period."""
        return tuple(m * k for m, k in zip(self.groups, self.growth))

    @property
    def bottleneck(self) -> bool:
        return self.neck is not None

    @property
    def default_image_size(self) -> int:
        return 224 if self.stem == "imagenet" else 32

    def replace(self, **changes: Any) -> "ArchSpec":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples as lists) for configs and the database."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    @property
    def name(self) -> str:
        from rksearch.models.naming import format_name

        return format_name(self)

    @property
    def canonical(self) -> str:
        """Name plus every knob: unique per spec, and `parse(spec.canonical) == spec`."""
        from rksearch.models.naming import format_canonical

        return format_canonical(self)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


__all__ = ["ArchSpec", "SpecError", "FORMS", "SOLVERS", "STYLES", "STEMS", "DEFAULT_NECK"]
