"""The typed architecture spec of an RKCNN (the family is described in docs/models.md).

`ArchSpec` is a frozen, hashable value: the search space produces it, `cost` prices it
(cached by value), `build` turns it into an `nn.Module`, and `naming` reads it from the
paper's model names (``spec.name`` and ``spec.canonical`` write them back).  Everything is
validated here, once, so that every other module can trust a spec it is handed.  What an
unset field means is decided here too, once, whichever way the spec was written: a name with
knobs beside it or a study's fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal

from rksearch.models.knobs import SpecError, canonical

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

#: the widest bottleneck, as a multiple of k: the paper's are 1k and 4k, so a larger figure is
#: most likely a width in channels (neck 128 meant as 4k at k = 32 builds a 199M-param model)
MAX_NECK = 8

#: growth rate k of a spec that gives none, by stem: the paper's CIFAR RKNets (Table 1, k = 36)
#: and ImageNet ERKNets (Table 3, k = 32)
DEFAULT_GROWTH: dict[str, int] = {"cifar": 36, "imagenet": 32}

#: groups m per period of an ImageNet spec that gives none (Table 3); 1 on CIFAR
IMAGENET_GROUPS: tuple[int, ...] = (2, 4, 8, 16)

PER_PERIOD: tuple[str, ...] = ("stages", "steps", "growth", "groups", "iterations")


def default_groups(stem: str, periods: int) -> int | tuple[int, ...]:
    """m of a spec that gives none: Table 3's 2, 4, 8, 16 for a 4-period (or shorter) ImageNet net, else 1."""
    return IMAGENET_GROUPS[:periods] if stem == "imagenet" and periods <= len(IMAGENET_GROUPS) else 1


@dataclass(frozen=True)
class ArchSpec:
    """One RKCNN, exactly.

    Per-period fields take one value per period (3 on CIFAR, 4 on ImageNet) or a single
    value for all.  Fields left as None take the paper's defaults for the stem (see
    docs/models.md, "Defaults").

    stages      s_d, RK stages per time-step
    steps       r_d, time-steps per period (each with its own weights); default 1
    growth      k_d, channels grown per composite layer; default 36 (CIFAR) or 32 (ImageNet)
    groups      m_d, growth layers per stage; the state has C_d = m_d * k_d channels;
                default 1 (CIFAR) or 2, 4, 8, 16 (ImageNet)
    form        explicit (ERKNet / RKCNN-E), clique (ICLR IRKNet), update (RKCNN-I/R)
    solver      update form only: gauss-seidel (RKCNN-I) or jacobi (RKCNN-R)
    iterations  u_d, update iterations per period (update form only; default 1).  A period
                with u = 0 has no update layers: it is an explicit period, as the 2022 code
                allows (``--update1 0``); at least one period needs u >= 1
    neck        bottleneck width as a multiple of k (None: no bottleneck)
    attention   attentional transition (suffix A)
    multiscale  multiscale feature strategy in the postprocessor; default on, off for ImageNet
    dropout     drop probability after each conv (0: none; the 2022 code uses 0.2)
    stem        'cifar' (3x3 conv, 32x32 inputs) or 'imagenet' (7x7/2 conv + max-pool)
    num_classes classifier outputs; default 10, or 1000 for ImageNet
    style       naming family: 'iclr' (ERKNet/IRKNet) or 'rkcnn' (RKCNN-E/I/R); default
                'rkcnn' for the update form, 'iclr' otherwise
    """

    stages: tuple[int, ...]
    steps: tuple[int, ...] | int = 1
    growth: tuple[int, ...] | int | None = None
    groups: tuple[int, ...] | int | None = None
    form: Form = "explicit"
    solver: Solver = "gauss-seidel"
    iterations: tuple[int, ...] | int = ()
    neck: int | None = None
    attention: bool = False
    multiscale: bool | None = None
    dropout: float = 0.0
    stem: Stem = "cifar"
    num_classes: int | None = None
    style: Style | None = None

    #: the registry's name for the family (`rksearch.models.registry`)
    family: ClassVar[str] = "RKCNN"

    def __post_init__(self) -> None:
        _check(self.stem in STEMS, f"stem: {self.stem!r} is not one of {', '.join(STEMS)}")
        _check(self.form in FORMS, f"form: {self.form!r} is not one of {', '.join(FORMS)}")
        self._fill_defaults()
        self._check_fields()
        self._check_form()

    def _fill_defaults(self) -> None:
        """Unset fields -> the paper's values for the stem; per-period fields -> one tuple entry per period."""
        if not isinstance(self.stages, (tuple, list)) or not self.stages:
            raise SpecError(f"stages: need one value per period (at least one), e.g. (6, 6, 6); got {self.stages!r}")
        periods = len(self.stages)
        unset = {
            "growth": DEFAULT_GROWTH[self.stem],
            "groups": default_groups(self.stem, periods),
            "multiscale": self.stem != "imagenet",
            "num_classes": 1000 if self.stem == "imagenet" else 10,
            "style": "rkcnn" if self.form == "update" else "iclr",
        }
        for name, default in unset.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.iterations in ((), None):
            object.__setattr__(self, "iterations", 1 if self.form == "update" else 0)
        for name in PER_PERIOD:
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, (tuple, list)) else (value,) * periods
            object.__setattr__(self, name, value)
            if len(value) != periods:
                raise SpecError(f"{name}: {len(value)} values given for {periods} periods; "
                                f"give one per period or a single value for all")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise SpecError(f"{name}: must be integers, got {value}")

    def _check_fields(self) -> None:
        """Each field on its own: allowed values and ranges."""
        _check(self.solver in SOLVERS, f"solver: {self.solver!r} is not one of {', '.join(SOLVERS)}")
        _check(self.style in STYLES, f"style: {self.style!r} is not one of {', '.join(STYLES)}")
        _check(all(s >= 1 for s in self.stages), f"stages: every s must be >= 1, got {self.stages}")
        _check(all(r >= 1 for r in self.steps), f"steps: every r must be >= 1, got {self.steps}")
        _check(all(k >= 1 for k in self.growth), f"growth: every k must be >= 1, got {self.growth}")
        _check(all(m >= 1 for m in self.groups), f"groups: every m must be >= 1, got {self.groups}")
        _check(all(u >= 0 for u in self.iterations), f"iterations: every u must be >= 0, got {self.iterations}")
        self._check_neck()
        _check(0.0 <= self.dropout < 1.0, f"dropout: must be in [0, 1), got {self.dropout}")
        _check(isinstance(self.num_classes, int) and self.num_classes >= 2,
               f"num_classes: must be an integer >= 2, got {self.num_classes!r}")
        _check(isinstance(self.attention, bool), f"attention: must be true or false, got {self.attention!r}")
        _check(isinstance(self.multiscale, bool), f"multiscale: must be true or false, got {self.multiscale!r}")
        if self.attention:
            _check(all(m * k >= 2 for m, k in zip(self.groups[1:], self.growth[1:])),
                   "attention: the attentional transition halves the channels; needs m*k >= 2")

    def _check_neck(self) -> None:
        """A bottleneck is a multiple of k, 1 to `MAX_NECK`; a larger one is refused with a hint, since it is
        most likely a width in channels, and every path to a spec (a name's knobs, a study, the cost
        command line) would otherwise build a model many times the intended size without a word."""
        _check(self.neck is None or (isinstance(self.neck, int) and self.neck >= 1),
               f"neck: bottleneck width multiple must be an integer >= 1 or None, got {self.neck!r}")
        if self.neck is None or self.neck <= MAX_NECK:
            return
        k = self.growth[0]
        exact = len(set(self.growth)) == 1 and self.neck % k == 0
        hint = f"{self.neck // k} for {self.neck} channels at k={k}" if exact else "4 for 4k"
        raise SpecError(f"neck: {self.neck} is a multiple of k, at most {MAX_NECK}; "
                        f"for a width in channels divide it by k: {hint}")

    def _check_form(self) -> None:
        """The rules that tie fields to the form (docs/models.md, "Rules")."""
        if self.form == "clique":
            _check(all(m == 1 for m in self.groups),
                   f"groups: the clique form (IRKNet) needs m = 1 in every period (paper Rule 4), got {self.groups}")
            _check(self.style == "iclr", "style: the clique form is the ICLR IRKNet; use style 'iclr'")
            _check(all(s >= 2 for s in self.stages),
                   f"stages: the clique form needs s >= 2 (stage II updates each stage from the others), "
                   f"got {self.stages}")
        if self.form == "update":
            stages = "_".join(str(s) for s in self.stages)
            _check(any(u >= 1 for u in self.iterations),
                   f"iterations: u = 0 in every period is RKCNN-E-{stages}; the update form needs u >= 1 "
                   f"in at least one period")
            _check(self.style == "rkcnn", "style: the update form is RKCNN-I/R; use style 'rkcnn'")
        else:
            _check(all(u == 0 for u in self.iterations),
                   f"iterations: only the update form (RKCNN-I/R) has update iterations; got {self.iterations} "
                   f"for form {self.form!r}")
            _check(self.solver == "gauss-seidel", "solver: only the update form can use 'jacobi' (RKCNN-R)")

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
        """The input side its costs are quoted at: 224 for the ImageNet stem, else 32."""
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

    # ---- names ---------------------------------------------------------------
    @property
    def name(self) -> str:
        """The paper's name: ``ERKNet-6x1 6x1 6x1``, ``IRKNet-5x1 5x1 5x1-AB``, ``RKCNN-I-3_3_3``.

        Knobs the name does not carry (k, m, and for 2022 names r, u, neck, attention) are left out.
        """
        if self.style == "iclr":
            family = "ERKNet" if self.form == "explicit" else "IRKNet"
            terms = " ".join(f"{s}x{r}" for s, r in zip(self.stages, self.steps))
            suffix = ("A" if self.attention else "") + ("B" if self.bottleneck else "")
            return f"{family}-{terms}" + (f"-{suffix}" if suffix else "")
        kind = "E" if self.form == "explicit" else ("R" if self.solver == "jacobi" else "I")
        return f"RKCNN-{kind}-" + "_".join(str(s) for s in self.stages)

    @property
    def canonical(self) -> str:
        """Name plus every knob in a fixed order: unique per spec, and `parse(spec.canonical) == spec`."""
        knobs: dict[str, Any] = {"k": self.growth, "m": self.groups}
        if self.style == "rkcnn":
            knobs["r"] = self.steps
            if self.form == "update":
                knobs["u"] = self.iterations
            knobs["attention"] = self.attention
        if self.neck is not None:
            knobs["neck"] = self.neck
        knobs.update(num_classes=self.num_classes, stem=self.stem, multiscale=self.multiscale, dropout=self.dropout)
        return canonical(self.name, **knobs)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


__all__ = ["ArchSpec", "DEFAULT_GROWTH", "DEFAULT_NECK", "FORMS", "IMAGENET_GROUPS", "MAX_NECK", "SOLVERS", "STEMS",
           "STYLES", "SpecError", "default_groups"]
