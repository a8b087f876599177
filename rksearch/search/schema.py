"""The study file's schema: pydantic models of every section, each forbidding unknown keys.

A study names its data, its training recipe, the fixed architecture (`model:`), the searched
dimensions (`space:`), how points are chosen (`search:`, `scheduler:`), budgets, resources,
storage and trackers.  Cross-field rules that would only fail once trials run (a grid over a continuous
axis, fp16 on the CPU) are refused here, as a validation error.  Reading a file, and turning
validation errors into lines that say where the file is wrong, is `rksearch.search.loader`'s.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from rksearch.store.urls import DEFAULT_URL
from rksearch.training.config import OptimConfig
from rksearch.training.data import DataConfig
from rksearch.training.runtime import RuntimeConfig

log = logging.getLogger(__name__)

#: architecture fields a study can fix (`model:`) or search (`space:`); see docs/models.md and ArchSpec
ARCH_FIELDS = ("name", "form", "solver", "periods", "stages", "steps", "growth", "groups", "iterations",
               "neck", "attention", "multiscale", "dropout", "style")
#: architecture fields with one value per period; `per_period: true` searches each period on its own
PER_PERIOD_FIELDS = ("stages", "steps", "growth", "groups", "iterations")
#: training knobs a study can search: where each one lives in a trial's config
TRAIN_FIELDS = {"lr": "optim", "weight_decay": "optim", "epochs": "optim", "schedule": "optim",
                "batch_size": "data", "augment": "data"}
DIMENSIONS = ARCH_FIELDS + tuple(TRAIN_FIELDS)
DEFAULT_CHECKPOINTS = "~/.cache/rksearch/runs"


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
    Annotated[Choice, Tag("values")] | Annotated[IntRange, Tag("range")] | Annotated[Continuous, Tag("interval")],
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
    """fifo trains every trial to the end; asha stops the weakest early (on `metric`).

    The defaults come from benchmarks/bench_search.py (a recorded 36-point RKCNN grid, 8 epochs
    of a cosine schedule, replayed under ASHA at grace 1/2/4 x reduction 2/3, 10 seeds each):
    a rung before epoch 4 ranks noise (the learning rate is at its peak and most trials are
    near chance), so grace 1 or 2 pruned the grid's best in 9-10 of 10 seeds, while grace 4
    found it in all 10 (reduction 3 spent less than 2 for the same result).
    """

    type: Literal["fifo", "asha"] = "fifo"
    grace_period: int = Field(4, ge=1, description="asha: epochs every trial gets (default 4, or all of "
                                                   "them when trials train fewer)")
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

    url: str = DEFAULT_URL
    checkpoints: str = Field(DEFAULT_CHECKPOINTS, description="a path every node can reach (or a URI)")
    keep_checkpoints: int = Field(1, ge=1, description="how many of a trial's best epochs (by validation "
                                                       "accuracy) keep their checkpoint; the last one is always kept")


class Failure(_Strict):
    max_failures: int = Field(2, ge=0, description="retries of a trial whose worker died, from its last checkpoint")


class MLflow(_Strict):
    """Each trial an MLflow run (Ray Tune's MLflowLoggerCallback, on the driver)."""

    tracking_uri: str | None = Field(
        None, description="where runs go (file:///path/mlruns, http://host:5000, ...); default: MLflow's own "
                          "(MLFLOW_TRACKING_URI, else a store in the working directory)")
    experiment: str | None = Field(None, min_length=1, description="the MLflow experiment; default: the study's name")

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, uri: str | None) -> str | None:
        # the study file is stored in the database and shown by `results`: a password would leak there
        if uri is not None and urlsplit(uri).password is not None:
            raise ValueError("holds a password, which the study file would store in the database; write the URI "
                             "without it and set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
                             "(or MLFLOW_TRACKING_TOKEN) in the environment")
        return uri


class Wandb(_Strict):
    """Each trial a W&B run (Ray Tune's WandbLoggerCallback); the API key only from the environment."""

    project: str | None = Field(None, min_length=1, description="the W&B project; default: the study's name")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online", description="offline writes runs under each trial's directory for `wandb sync`")

    @model_validator(mode="before")
    @classmethod
    def _no_key(cls, data: Any) -> Any:
        # refused with its reason rather than as an unknown field: a key in the file would be stored in the database
        if isinstance(data, dict) and {"api_key", "api_key_file"} & set(data):
            raise ValueError("api_key: not read from the study file, which is stored in the database; "
                             "set WANDB_API_KEY in the environment (or run `wandb login`)")
        return data


class Tracking(_Strict):
    """Experiment trackers that receive every trial's per-epoch results (optional extra: rksearch[tracking])."""

    tensorboard: bool = Field(False, description="check that Ray writes TensorBoard event files and say where "
                                                 "in the end-of-study summary")
    mlflow: MLflow | None = None
    wandb: Wandb | None = None


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
    tracking: Tracking = Field(default_factory=Tracking)
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

    @property
    def max_epochs(self) -> int:
        """The most epochs any of its trials trains: `train.epochs`, or the largest an `epochs`
        dimension of the space allows (ASHA's last rung)."""
        epochs = self.space.get("epochs")
        if epochs is None:
            return self.train.epochs
        return int(max(epochs.values if isinstance(epochs, (Choice, IntRange)) else epochs.bounds))

    def _grace_within_epochs(self) -> None:
        """ASHA needs grace_period <= the trials' (largest) epochs: the default shrinks to fit a
        short study, a grace period the file sets is refused rather than failing in Ray."""
        most = self.max_epochs
        if "grace_period" not in self.scheduler.model_fields_set:
            self.scheduler.grace_period = min(self.scheduler.grace_period, most)
        elif self.scheduler.grace_period > most:
            raise ValueError(f"scheduler.grace_period: {self.scheduler.grace_period} epochs, but trials train at most "
                             f"{most}; ASHA needs grace_period <= the epochs")

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        continuous = [d for d, dom in self.space.items() if isinstance(dom, Continuous)]
        if self.search.algorithm == "grid" and continuous:
            raise ValueError(f"space: {', '.join(continuous)} continuous; a grid needs values or range "
                             "(or use algorithm random/tpe/multi_objective)")
        if self.scheduler.type == "asha" and self.search.algorithm == "multi_objective":
            raise ValueError("scheduler: asha stops trials on one metric; it cannot drive a multi_objective search")
        if self.scheduler.type == "asha":
            self._grace_within_epochs()
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
