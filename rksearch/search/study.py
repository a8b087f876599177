"""The study file: its schema, and errors that say where a file is wrong and what is allowed.

A study is YAML (read with ``yaml.safe_load`` semantics only) validated by pydantic models
that forbid unknown keys.  Every problem becomes one line of a `StudyError`::

    studies/sweep.yaml:12: search.algorithm: 'optuna' is not allowed; allowed: grid, random, tpe, multi_objective

Nothing runs and nothing is written anywhere until `load` returns, so a bad file costs nothing.
``--set key.path=value`` overrides are applied to the parsed document before validation and
are reported as ``--set key.path`` when they are the culprit.

A hostile or mistaken file is refused the same way, in one line and in bounded time and memory:
one that is not UTF-8 text (a binary passed by mistake), one that is empty, and one whose YAML
aliases (``&anchor`` / ``*alias``) expand past `MAX_EXPANDED_VALUES` (the "billion laughs"),
contain themselves, or nest too deep to parse.  The expansion is measured on the parsed node
graph, each node once, before anything (line numbers, validation, the database) walks it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from rksearch.errors import RksearchError
from rksearch.training.data import DataConfig
from rksearch.training.config import OptimConfig
from rksearch.training.runtime import RuntimeConfig

log = logging.getLogger(__name__)

#: architecture fields a study can fix (`model:`) or search (`space:`); see rkcnn.md and ArchSpec
ARCH_FIELDS = ("name", "form", "solver", "periods", "stages", "steps", "growth", "groups", "iterations",
               "neck", "attention", "multiscale", "dropout", "style")
#: architecture fields with one value per period; `per_period: true` searches each period on its own
PER_PERIOD_FIELDS = ("stages", "steps", "growth", "groups", "iterations")
#: training knobs a study can search: where each one lives in a trial's config
TRAIN_FIELDS = {"lr": "optim", "weight_decay": "optim", "epochs": "optim", "schedule": "optim",
                "batch_size": "data", "augment": "data"}
DIMENSIONS = ARCH_FIELDS + tuple(TRAIN_FIELDS)
DEFAULT_STORAGE = "sqlite:///rksearch.db"
DEFAULT_CHECKPOINTS = "~/.cache/rksearch/runs"
#: the most values (mapping keys, values, list items) a study may hold once every alias is expanded.
#: Real studies hold a few hundred, so this leaves room for a very long `values:` or `seeds:` list,
#: yet walking, validating and storing an allowed document stays well under a second and ~100 MB;
#: a "billion laughs" file of nine short lines (each a list of ten aliases of the line before)
#: would otherwise expand to 10^9 values and exhaust memory in the line walk and pydantic.
MAX_EXPANDED_VALUES = 100_000


class StudyError(RksearchError, ValueError):
    """A study file (or override) that cannot run; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _count(value: Any) -> Any:
    """Budgets read as numbers or with a suffix: 1.5M params, 2G FLOPs, 300k."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKMGT]?)\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a count; write e.g. 1500000, 1.5M or 2G")
        scale = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[match.group(2)]
        return int(float(match.group(1)) * scale)
    return value


Count = Annotated[int, BeforeValidator(_count), Field(gt=0)]
Scalar = Union[bool, int, float, str, None]
Value = Union[Scalar, list[Scalar]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Choice(_Strict):
    """One of the listed values (a grid axis)."""

    values: list[Value] = Field(min_length=1)
    per_period: bool = False


class IntRange(_Strict):
    """Integers lo..hi inclusive, every `step` (a grid axis)."""

    range: tuple[int, int]
    step: int = Field(1, ge=1)
    per_period: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.range[0] > self.range[1]:
            raise ValueError(f"range: [{self.range[0]}, {self.range[1]}] is empty; write [low, high]")
        return self

    @property
    def values(self) -> list[int]:
        return list(range(self.range[0], self.range[1] + 1, self.step))


class Continuous(_Strict):
    """A real interval, uniform or log-uniform: random and Optuna searches only."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_interval(self) -> Continuous:
        given = [b for b in (self.uniform, self.loguniform) if b is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform: [low, high] or loguniform: [low, high]")
        low, high = given[0]
        if not low < high or (self.loguniform is not None and low <= 0):
            raise ValueError(f"[{low}, {high}] is not a valid interval (low < high, and low > 0 for loguniform)")
        return self

    @property
    def log(self) -> bool:
        return self.loguniform is not None

    @property
    def bounds(self) -> tuple[float, float]:
        return self.loguniform if self.loguniform is not None else self.uniform  # type: ignore[return-value]

    per_period: Literal[False] = False


def _domain(value: Any) -> Any:
    """A bare list is a choice and a bare scalar a fixed value: the short forms people write."""
    if isinstance(value, list):
        return {"values": value}
    if not isinstance(value, dict):
        return {"values": [value]}
    return value


def _domain_kind(value: Any) -> str:
    """Which domain a mapping means, by its keys, so errors speak of that domain only."""
    if isinstance(value, (IntRange, Continuous)):  # serialising: the model itself says which
        return "range" if isinstance(value, IntRange) else "interval"
    keys = set(value) if isinstance(value, dict) else set()
    if "range" in keys:
        return "range"
    if keys & {"uniform", "loguniform"}:
        return "interval"
    return "values"


Domain = Annotated[
    Union[Annotated[Choice, Tag("values")], Annotated[IntRange, Tag("range")], Annotated[Continuous, Tag("interval")]],
    Discriminator(_domain_kind),
]


class ModelSection(_Strict):
    """Architecture fields fixed for every trial (ArchSpec's, or a model `name` plus knobs)."""

    name: str | None = None
    form: Literal["explicit", "clique", "update"] | None = None
    solver: Literal["gauss-seidel", "jacobi"] | None = None
    periods: int | None = Field(None, ge=1)
    stages: int | list[int] | None = None
    steps: int | list[int] | None = None
    growth: int | list[int] | None = None
    groups: int | list[int] | None = None
    iterations: int | list[int] | None = None
    neck: int | None = Field(None, ge=1)
    attention: bool | None = None
    multiscale: bool | None = None
    dropout: float | None = Field(None, ge=0, lt=1)
    style: Literal["iclr", "rkcnn"] | None = None


class Search(_Strict):
    """How trials are chosen.  grid: every point (each `seeds` entry a replicate); random: `num_samples`
    seeded draws; tpe / multi_objective: Optuna through Ray Tune's OptunaSearch."""

    algorithm: Literal["grid", "random", "tpe", "multi_objective"] = "grid"
    num_samples: int | None = Field(None, ge=1, description="random/tpe/multi_objective: trials to draw")
    metric: Literal["best_val_acc", "val_acc"] = Field(
        "best_val_acc", description="what is maximised: the best epoch's or the latest epoch's validation accuracy")
    cost: Literal["flops", "params"] = Field("flops", description="multi_objective: the cost to minimise")
    seed: int = 0
    max_concurrent: int | None = Field(None, ge=1, description="cap on trials running at once")

    @model_validator(mode="after")
    def _samples(self) -> Search:
        if self.algorithm == "grid" and self.num_samples is not None:
            raise ValueError("num_samples: a grid runs every point once per seed; remove num_samples "
                             "or use algorithm random/tpe/multi_objective")
        if self.algorithm != "grid" and self.num_samples is None:
            raise ValueError(f"num_samples: required for algorithm {self.algorithm}")
        return self

    mode: ClassVar[str] = "max"


class Scheduler(_Strict):
    """fifo trains every trial to the end; asha stops the weakest early (on `metric`)."""

    type: Literal["fifo", "asha"] = "fifo"
    grace_period: int = Field(1, ge=1, description="asha: epochs every trial gets")
    reduction_factor: float = Field(3, gt=1)


class Budgets(_Strict):
    """Trials over a budget are recorded as skipped with their cost, never trained."""

    max_params: Count | None = None
    max_flops: Count | None = None
    max_memory: Count | None = Field(
        None, description="bytes one trial may use to train (e.g. 4G = 4e9), checked against the cost model's "
                          "estimate; default: resources.memory, else the node's memory shared by the trials "
                          "running at once on it (CPU trials only: GPU memory is not known before a trial runs)")


class Resources(_Strict):
    """Per trial; a fractional gpu packs several small trials on one GPU."""

    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
    memory: Count | None = Field(
        None, description="bytes per trial (e.g. 8G = 8e9): reserved as Ray's `memory` resource, so no more trials "
                          "share a node than its memory holds, and the limit trials are checked against "
                          "unless budgets.max_memory is set")

    @field_validator("gpu")
    @classmethod
    def _packable(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError(f"{gpu}: more than one GPU per trial must be a whole number")
        return gpu


class Storage(_Strict):
    """Where results and checkpoints go; `url` may also come from --storage or RKSEARCH_STORAGE."""

    url: str = DEFAULT_STORAGE
    checkpoints: str = Field(DEFAULT_CHECKPOINTS, description="a path every node can reach (or a URI)")
    keep_checkpoints: int = Field(1, ge=1, description="how many of a trial's best epochs (by validation "
                                                       "accuracy) keep their checkpoint; the last one is always kept")


class Failure(_Strict):
    max_failures: int = Field(2, ge=0, description="retries of a trial whose worker died, from its last checkpoint")


class Study(_Strict):
    """A whole study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    train: OptimConfig = Field(default_factory=OptimConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    space: dict[str, Annotated[Domain, BeforeValidator(_domain)]] = Field(default_factory=dict)
    search: Search = Field(default_factory=Search)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    budgets: Budgets = Field(default_factory=Budgets)
    resources: Resources = Field(default_factory=Resources)
    storage: Storage = Field(default_factory=Storage)
    failure: Failure = Field(default_factory=Failure)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    reuse: bool | Literal["any"] = Field(
        False, description="link results of identical trials already completed in the database: true links only "
                           "those trained by the same code version, 'any' whatever code trained them")

    @field_validator("space", mode="before")
    @classmethod
    def _known_dimensions(cls, space: Any) -> Any:
        for dim in space if isinstance(space, dict) else ():
            if dim not in DIMENSIONS:
                raise ValueError(f"{dim!r} is not a search dimension; allowed: {', '.join(DIMENSIONS)}")
        return space

    @field_validator("space")
    @classmethod
    def _per_period_fields(cls, space: dict[str, Any]) -> dict[str, Any]:
        for dim, domain in space.items():
            if getattr(domain, "per_period", False) and dim not in PER_PERIOD_FIELDS:
                raise ValueError(f"{dim}: per_period applies to {', '.join(PER_PERIOD_FIELDS)} only")
        return space

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        continuous = [d for d, dom in self.space.items() if isinstance(dom, Continuous)]
        if self.search.algorithm == "grid" and continuous:
            raise ValueError(f"space: {', '.join(continuous)} continuous; a grid needs values or range "
                             "(or use algorithm random/tpe/multi_objective)")
        if self.scheduler.type == "asha" and self.search.algorithm == "multi_objective":
            raise ValueError("scheduler: asha stops trials on one metric; it cannot drive a multi_objective search")
        if self.search.algorithm in ("tpe", "multi_objective") and len(self.seeds) > 1:
            raise ValueError("seeds: Optuna searches train each point once; give one seed")
        # under Ray a trial sees a GPU exactly when it is given one (runtime.planned): refuse plans
        # that could only fail at run time, or reserve a GPU nothing uses
        gpu, device, amp = self.resources.gpu, self.runtime.device, self.runtime.amp
        if device == "cuda" and gpu == 0:
            raise ValueError("runtime.device: cuda, but resources.gpu is 0, so Ray gives the trials no GPU; "
                             "set resources.gpu (e.g. 1, or 0.25 to pack four trials on one)")
        if device == "cpu" and gpu > 0:  # legitimate only to place trials by (fake) GPUs, as the fault tests do
            log.warning("resources.gpu: %g reserves a GPU per trial that runtime.device: cpu never uses", gpu)
        if amp == "fp16" and (device == "cpu" or gpu == 0):
            raise ValueError("runtime.amp: fp16 needs CUDA, and these trials run on the CPU (resources.gpu is 0); "
                             "use bf16 or off, or give the trials a GPU")
        return self


# ---- loading ----------------------------------------------------------------------------------

def load(path: str | Path, overrides: list[str] | None = None) -> tuple[Study, str]:
    """The validated study and the exact text that defines it (file plus overrides, for the database)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError([f"{path}: cannot read the study file ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:  # a binary (an image, a checkpoint) passed by mistake
        raise StudyError([f"{path}: not a text file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
                          "is not UTF-8; a study file is YAML text"]) from None
    return loads(text, source=str(path), overrides=overrides)


def loads(text: str, source: str = "<study>", overrides: list[str] | None = None) -> tuple[Study, str]:
    document, lines, size = _parse_yaml(text, source)
    overrides = overrides or []
    set_paths = {}
    for item in overrides:
        dotted, value_size = _apply_override(document, item, source)
        set_paths[dotted] = f"--set {dotted}"
        size += value_size
    if size > MAX_EXPANDED_VALUES:  # each part passed alone; the sum bounds the merged document from above
        raise StudyError([f"{source}: with its --set overrides the study holds more than {MAX_EXPANDED_VALUES:,} "
                          "values; a whole study has a few hundred, so it is refused"])
    try:
        study = Study.model_validate(document)
    except ValidationError as exc:
        raise StudyError([_describe(err, source, lines, set_paths) for err in exc.errors()]) from None
    if overrides:
        text = text.rstrip("\n") + "\n# overrides: " + " ".join(f"--set {o}" for o in overrides) + "\n"
    return study, text


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple, int], int]:
    """The document as plain data, the line of every key path (for messages) and its expanded size."""
    try:
        document, root, size = _safe_load(text, source, with_lines=True)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError([f"{where}: not valid YAML: {problem}"]) from None
    if document is None:  # an empty file, or one of comments only
        raise StudyError([f"{source}: the study file is empty; it is a mapping of fields (name, data, space, ...)"])
    if not isinstance(document, dict):
        raise StudyError([f"{source}:1: a study file is a mapping of fields (name, data, space, ...), "
                          f"not {type(document).__name__}"])
    lines: dict[tuple, int] = {}
    _walk(root, (), lines, set())  # after construction: `<<` merge keys are flattened, keys at their anchor
    return document, lines, size


def _safe_load(text: str, source: str, with_lines: bool) -> tuple[Any, yaml.Node | None, int]:
    """`yaml.safe_load`, refusing (one StudyError line) a document that would be too costly to use.

    Also returns the composed node graph, for line numbers, and the document's expanded size.
    safe_load itself shares aliased objects, so a few bytes can stand for 10^9 values that only
    the code after it pays for; the size is measured here, before anything walks the expansion.
    Messages name `source`, with the line of the culprit when `with_lines` (a file, not a --set).
    """
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            size = _expanded_size(root, source, with_lines) if root is not None else 0
            return (loader.construct_document(root) if root is not None else None), root, size
        finally:
            loader.dispose()
    except RecursionError:  # PyYAML composes and constructs recursively
        raise StudyError([f"{source}: the document nests too deeply to read (lists or mappings hundreds of "
                          "levels deep); a study is a few levels deep, so it is refused"]) from None


def _expanded_size(root: yaml.Node, source: str, with_lines: bool) -> int:
    """How many values (keys, values, list items) `root` holds once every alias is expanded.

    Each node's size is computed once and reused wherever an alias repeats it, so this costs time
    linear in the file however large the expansion.  Refuses the first node, innermost first,
    that holds more than MAX_EXPANDED_VALUES, and a node that contains itself through an alias.
    """
    sizes: dict[int, int | None] = {}  # id(node) -> its expanded size; None while its children are counted

    def where(node: yaml.Node) -> str:
        return f"{source}:{node.start_mark.line + 1}" if with_lines else source

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            known = sizes[id(node)]
            if known is None:
                raise StudyError([f"{where(node)}: this value contains itself through a YAML alias "
                                  "(&anchor / *alias), so it never ends; refusing it"])
            return known
        sizes[id(node)] = None
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        total = 1 + sum(size(child) for child in children)
        if total > MAX_EXPANDED_VALUES:
            raise StudyError([f"{where(node)}: this value holds more than {MAX_EXPANDED_VALUES:,} values once YAML "
                              "aliases (&anchor / *alias) are expanded; a whole study has a few hundred, "
                              "so it is refused"])
        sizes[id(node)] = total
        return total

    return size(root)


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], walked: set[int]) -> None:
    """Record the line of `path` and of every key path below it.

    A node met again through an alias is not walked again, which keeps this linear in the file:
    the paths below its second use fall back (in `_describe`) to the line of the alias itself.
    """
    lines[path] = node.start_mark.line + 1
    if id(node) in walked:
        return
    walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            _walk(value, child, lines, walked)
            lines[child] = key.start_mark.line + 1  # the key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _walk(value, path + (i,), lines, walked)


def _apply_override(document: dict[str, Any], item: str, source: str) -> tuple[str, int]:
    """Set one ``key.path=value`` in `document`; the dotted path, and the value's expanded size."""
    dotted, sep, raw = item.partition("=")
    keys = dotted.strip().split(".")
    if not sep or not all(keys):
        raise StudyError([f"--set {item}: write key.path=value, e.g. --set train.epochs=2"])
    try:
        value, _, size = _safe_load(raw, f"--set {dotted}", with_lines=False)
    except yaml.YAMLError:  # not YAML: the text itself, e.g. --set description=[draft
        value, size = raw, 1
    target = document
    for key in keys[:-1]:
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            raise StudyError([f"--set {dotted}: {key} is not a section in {source}"])
        target = child
    target[keys[-1]] = value
    return ".".join(keys), size


def _describe(err: dict[str, Any], source: str, lines: dict[tuple, int], set_paths: dict[str, str]) -> str:
    """One line: where (file:line or --set), which field, what is wrong, what is allowed."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[0].isupper()) and not _is_union_tag(p))
    field = ".".join(str(p) for p in loc) or "(top level)"
    where = next((set_paths[k] for k in set_paths if field == k or field.startswith(k + ".")), None)
    if where is None:
        path = loc
        while path and path not in lines:
            path = path[:-1]
        where = f"{source}:{lines.get(path, 1)}"
    return f"{where}: {field}: {_message(err, loc)}"


def _is_union_tag(part: Any) -> bool:
    """pydantic's names for union members and validators in error locations (not fields)."""
    return isinstance(part, str) and part.startswith(
        ("function-", "int", "list[", "str", "bool", "float", "tuple[", "constrained-"))


def _message(err: dict[str, Any], loc: tuple) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err.get('input')!r} is not allowed; allowed: {expected.replace(' or ', ', ')}"
    return msg


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = Study
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        else:
            if loc and loc[0] == "space":
                return ["values", "per_period", "range", "step", "uniform", "loguniform"]
            return []
    return list(model.model_fields) if model is not None else []
