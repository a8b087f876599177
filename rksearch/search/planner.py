"""Search space -> concrete, priced trials.

An *assignment* is one point of a study's space: a flat dict of dimension values, with per-period
dimensions split into ``stages.1``, ``stages.2``, ... (1-based, as periods are in the paper).
`Planner.resolve` turns an assignment plus a seed into a `PlannedTrial`: the model (an RKCNN
`ArchSpec` or a baseline name), the full `TrialConfig`, its cost, and a trial key that hashes
everything that changes the result (so identical trials are recognised across spellings and
studies).  Resolution is pure and cheap (closed-form costs), so the driver prices a whole grid
before anything trains and workers re-derive the same trial from the assignment alone.

A trial is not runnable (it carries a `problem`) when its architecture is invalid, it is over a
params/FLOPs budget, or the memory it needs to train (`cost.training_memory` at its batch size)
is more than one trial may use (`memory_limit`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import torch

from rksearch.models import ArchSpec, ModelSpec, SpecError, find_family
from rksearch.models import cost as costs
from rksearch.search.schema import (
    PER_PERIOD_FIELDS,
    TRAIN_FIELDS,
    Choice,
    Continuous,
    IntRange,
    Study,
)
from rksearch.training.config import TrialConfig
from rksearch.training.data import CLASSES, stem_for
from rksearch.training.runtime import keyed_layout
from rksearch.training.runtime import planned as planned_runtime

#: stages per period of a study that gives neither a model name nor stages (every other unset
#: architecture field means what `ArchSpec` says, as it does beside a model name)
DEFAULT_STAGES = 3
#: study field -> the knob a model family's parser takes beside a name
NAME_KNOBS = {"growth": "k", "groups": "m", "steps": "r", "iterations": "u", "neck": "neck",
              "attention": "attention", "multiscale": "multiscale", "dropout": "dropout"}


@dataclass(frozen=True)
class PlannedTrial:
    """One trial, fully determined: what trains, with which recipe, at what cost."""

    key: str
    model_name: str
    canonical: str
    assignment: dict[str, Any]
    seed: int
    config: dict[str, Any] = field(repr=False)
    cost: costs.Cost | None = None
    memory: costs.Memory | None = None  # to train at the trial's batch size (an estimate)
    problem: str | None = None  # why it cannot run (invalid architecture, over budget or over memory)

    @property
    def runnable(self) -> bool:
        return self.problem is None

    def info(self) -> Any:
        """The store's record of this trial (imported lazily: workers never touch the store)."""
        from rksearch.store import TrialInfo

        c = self.cost
        return TrialInfo(trial_key=self.key, model_name=self.model_name, canonical=self.canonical,
                         dims=dict(self.assignment), config=self.config, params=c and c.params,
                         flops=c and c.flops, macs=c and c.macs, seed=self.seed)


@dataclass(frozen=True)
class Node:
    """What one machine offers the trials placed on it; it sets the default memory limit of a trial."""

    memory: int  # bytes
    cpus: float
    gpus: float = 0

    @classmethod
    def this_machine(cls) -> Node:
        """This machine's physical memory, the CPUs this process may use and its CUDA devices."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cls(memory=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), cpus=cpus,
                   gpus=torch.cuda.device_count())

    @classmethod
    def largest_ray_node(cls, nodes: list[dict[str, Any]]) -> Node:
        """The live node with the most memory, from `ray.nodes()` (Ray's `memory` resource: what
        tasks may use, the object store left out), so that a trial that fits it is not skipped."""
        live = [n["Resources"] for n in nodes if n.get("Alive")]
        if not live:
            raise ValueError("no live Ray node")
        biggest = max(live, key=lambda r: r.get("memory", 0))
        return cls(memory=int(biggest.get("memory", 0)), cpus=biggest.get("CPU", 0), gpus=biggest.get("GPU", 0))


@dataclass(frozen=True)
class MemoryLimit:
    """The memory one trial may use to train, and where that figure comes from (said in skip reasons)."""

    bytes: int
    source: str


def trials_at_once(study: Study, node: Node) -> int:
    """How many of the study's trials run on `node` together: what its CPUs, its GPUs (for GPU
    trials) and ``search.max_concurrent`` allow; at least 1."""
    res = study.resources
    room = [math.floor(node.cpus / res.cpu + 1e-9)]  # 0.3 CPU a trial on 0.9 CPUs: 3 trials, not 2.9999
    if res.gpu > 0:
        room.append(math.floor(node.gpus / res.gpu + 1e-9))
    if study.search.max_concurrent is not None:
        room.append(study.search.max_concurrent)
    return max(1, min(room))


def memory_per_trial(study: Study, node: Node) -> MemoryLimit:
    """`node`'s memory shared evenly by the trials running on it at once."""
    n = trials_at_once(study, node)
    return MemoryLimit(node.memory // n, f"node memory {costs.human_bytes(node.memory)} / "
                                         f"{n} trial{'s' if n > 1 else ''} at once")


def memory_limit(study: Study, node: Node | None = None) -> MemoryLimit | None:
    """What a trial's training memory must fit in: ``budgets.max_memory`` when set, else
    ``resources.memory``, else its share of `node` (`memory_per_trial`).

    The node's share applies to CPU trials only: a GPU trial keeps its activations in GPU memory,
    which neither Ray nor the driver knows before the trial runs (and a fractional ``gpu`` shares
    compute, not a fixed slice of memory), so GPU trials are checked only against an explicit
    figure.  None: no check.
    """
    if study.budgets.max_memory is not None:
        return MemoryLimit(study.budgets.max_memory, "budgets.max_memory")
    if study.resources.memory is not None:
        return MemoryLimit(study.resources.memory, "resources.memory")
    if node is None or study.resources.gpu > 0:
        return None
    return memory_per_trial(study, node)


class Planner:
    """Everything about a study's trials that does not need Ray: enumerate, sample, resolve, price.

    `node`: the machine trials run on (`Node.this_machine()` for a dry run, Ray's largest node
    for a study), which sets the memory limit when the study gives none (`memory_limit`);
    without it only the study's own figures are checked.
    """

    def __init__(self, study: Study, node: Node | None = None) -> None:
        self.study = study
        self.memory_limit = memory_limit(study, node)

    # ---- the points of the space -------------------------------------------------------------
    @cached_property
    def axes(self) -> dict[str, Any]:
        """Flat dimension name -> domain, per-period dimensions split by period."""
        flat: dict[str, Any] = {}
        for dim, domain in self.study.space.items():
            if getattr(domain, "per_period", False):
                for p in range(1, self.periods + 1):
                    flat[f"{dim}.{p}"] = domain
            else:
                flat[dim] = domain
        return flat

    @cached_property
    def periods(self) -> int:
        fixed = self.study.model.periods
        if fixed:
            return fixed
        lists = [len(v) for v in (getattr(self.study.model, f) for f in PER_PERIOD_FIELDS) if isinstance(v, list)]
        return lists[0] if lists else (4 if self.study.data.dataset == "imagenet" else 3)

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a discrete space, in a stable order (the last dimension varies fastest)."""
        names = list(self.axes)
        values = [_values(self.axes[n]) for n in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]

    def sample(self, n: int, seed: int) -> list[dict[str, Any]]:
        """`n` seeded random points (the random search; also the dry run of an Optuna search)."""
        rng = random.Random(seed)
        return [{name: _draw(domain, rng) for name, domain in self.axes.items()} for _ in range(n)]

    def points(self) -> list[dict[str, Any]]:
        """The assignments a grid or random search will train (before seeds, budgets and dedup)."""
        search = self.study.search
        if search.algorithm == "grid":
            return self.grid()
        return self.sample(search.num_samples or 1, search.seed)

    def plan(self) -> list[PlannedTrial]:
        """Every trial of a grid/random study, one per point and seed, duplicates removed."""
        seen: dict[str, PlannedTrial] = {}
        for assignment in self.points():
            for seed in self.study.seeds:
                trial = self.resolve(assignment, seed)
                seen.setdefault(trial.key, trial)
        return list(seen.values())

    # ---- one point -> one trial ------------------------------------------------------------------
    def resolve(self, assignment: dict[str, Any], seed: int) -> PlannedTrial:
        """The trial an assignment means; invalid or over-budget trials carry a `problem`."""
        arch, train = self._split(assignment)
        try:
            spec = self._model(arch)
            config = self._config(spec.canonical, train, seed)
        except (SpecError, ValueError) as exc:
            label = arch.get("name") or "RKCNN (" + ", ".join(f"{k}={v}" for k, v in assignment.items()) + ")"
            key = _hash({"invalid": assignment, "seed": seed})
            return PlannedTrial(key, str(label), str(label), assignment, seed, {},
                                problem=f"invalid architecture: {_first_line(exc)}")
        cost = costs.count(spec, self.image_size)
        batch = config["data"]["batch_size"]
        memory = costs.training_memory(spec, batch, self.image_size, momentum=config["optim"]["momentum"] > 0)
        key = _hash(_identity(config))
        return PlannedTrial(key, spec.name, spec.canonical, assignment, seed, config, cost, memory,
                            self._over_budget(cost) or self._over_memory(memory, batch))

    @property
    def image_size(self) -> int:
        return self.study.data.size

    def _split(self, assignment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Fixed model fields overlaid with the assignment, per-period parts reassembled."""
        arch = {k: v for k, v in self.study.model.model_dump().items() if v is not None}
        train: dict[str, Any] = {}
        per_period: dict[str, dict[int, Any]] = {}
        for name, value in assignment.items():
            dim, _, period = name.partition(".")
            if period:
                per_period.setdefault(dim, {})[int(period)] = value
            elif dim in TRAIN_FIELDS:
                train[dim] = value
            else:
                arch[dim] = value
        for dim, by_period in per_period.items():
            arch[dim] = [by_period[p] for p in sorted(by_period)]
        return arch, train

    def _model(self, arch: dict[str, Any]) -> ModelSpec:
        """The spec of a model name plus the fixed and searched fields as its knobs, or of the fields alone
        (an RKCNN); the stem and classes come from the data."""
        stem, classes = stem_for(self.image_size), self.num_classes
        arch = dict(arch)  # `resolve` still labels an invalid trial by the caller's arch, name included
        name = arch.pop("name", None)
        if name is None:
            return self._spec(arch, stem, classes)
        extra = sorted(set(arch) - set(NAME_KNOBS))
        if extra:
            raise SpecError(f"{', '.join(extra)}: set by the model name {name!r}; remove them or drop the name")
        knobs = {NAME_KNOBS[k]: v for k, v in arch.items()}
        return find_family(name).parse(name, stem=stem, num_classes=classes, **knobs)

    def _spec(self, arch: dict[str, Any], stem: str, classes: int) -> ArchSpec:
        fields = {"stages": DEFAULT_STAGES, **arch}
        periods = fields.pop("periods", None) or self.periods
        if fields.get("form", "explicit") != "update":
            fields.pop("iterations", None)  # a space may search u across forms; only the update form has it
        for name in PER_PERIOD_FIELDS:
            if name in fields:
                value = fields[name]
                fields[name] = tuple(value) if isinstance(value, list) else (value,) * periods
        return ArchSpec(stem=stem, num_classes=classes, **fields)

    def _config(self, model: str, train: dict[str, Any], seed: int) -> dict[str, Any]:
        """The trial's full config; `model` is the spec's canonical string, which carries every knob."""
        study = self.study
        data = study.data.model_dump(mode="json", exclude_unset=True)
        optim = study.train.model_dump(mode="json", exclude_unset=True)
        for dim, value in train.items():
            (data if TRAIN_FIELDS[dim] == "data" else optim)[dim] = value
        config = TrialConfig.model_validate({
            "model": {"name": model, "knobs": {}},
            "data": data, "optim": optim,
            "runtime": planned_runtime(study.runtime, study.resources.gpu).model_dump(mode="json", exclude_unset=True),
            "seed": seed,
        })
        return config.model_dump(mode="json")

    @cached_property
    def num_classes(self) -> int:
        data = self.study.data
        if data.dataset == "synthetic":
            return data.num_classes
        if data.dataset == "imagenet":
            train_dir = data.root / "imagenet" / "train"
            found = [p for p in train_dir.iterdir() if p.is_dir()] if train_dir.is_dir() else []
            return len(found) or 1000
        return CLASSES[data.dataset]

    def _over_budget(self, cost: costs.Cost) -> str | None:
        b = self.study.budgets
        if b.max_params is not None and cost.params > b.max_params:
            return f"over budget: {cost.params:,} params > max_params {b.max_params:,}"
        if b.max_flops is not None and cost.flops > b.max_flops:
            return f"over budget: {cost.flops:,} FLOPs > max_flops {b.max_flops:,}"
        return None

    def _over_memory(self, memory: costs.Memory, batch: int) -> str | None:
        limit = self.memory_limit
        if limit is None or memory.total <= limit.bytes:
            return None
        settings = ("budgets.max_memory" if limit.source == "budgets.max_memory"
                    else "budgets.max_memory or resources.memory")
        size = self.image_size
        return (f"over memory: needs ~{costs.human_bytes(memory.total)} to train (batch {batch}, {size}x{size}), "
                f"more than the {costs.human_bytes(limit.bytes)} one trial may use ({limit.source}); "
                f"set {settings} to change this")


# ---- helpers -------------------------------------------------------------------------------------

def _values(domain: Any) -> list[Any]:
    if isinstance(domain, (Choice, IntRange)):
        return list(domain.values)
    raise ValueError("continuous dimensions have no grid")


def _draw(domain: Any, rng: random.Random) -> Any:
    if isinstance(domain, Continuous):
        low, high = domain.bounds
        if domain.log:
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.uniform(low, high)
    return rng.choice(_values(domain))


#: config fields that change where or how fast a trial runs but not what it computes (the device
#: type, precision and determinism do: the runtime is hashed as `runtime.planned` resolves it,
#: its memory format as `runtime.keyed_layout` records it).
#: Compiling reorders floating-point sums as recomputing concatenations does, no more; and a field
#: added here keeps the keys that studies already in databases were recorded under
_NOT_IDENTITY = {"data": ("root", "download", "verify", "num_workers", "eval_batch_size"),
                 "runtime": ("threads", "memory_efficient", "compile")}


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a trial config that decide its result: what the trial key hashes (the
    memory format as `runtime.keyed_layout` records it)."""
    identity = {section: ({k: v for k, v in body.items() if k not in _NOT_IDENTITY.get(section, ())}
                          if isinstance(body, dict) else body)
                for section, body in config.items()}
    runtime = identity.get("runtime")
    if isinstance(runtime, dict) and "channels_last" in runtime:
        runtime["channels_last"] = keyed_layout(runtime["channels_last"], runtime.get("device", "cpu"))
    return identity


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


@lru_cache(maxsize=4)
def planner_for(study_json: str) -> Planner:
    """The study's planner, built once per process: Tune hands every trial of a study (and the
    driver's callbacks every config) the same JSON, and a worker imports only this module's
    dependencies for it, whichever trainable it runs (`trainable`, `replay`)."""
    return Planner(Study.model_validate_json(study_json))


def planned_trial(study_json: str, config: dict[str, Any]) -> PlannedTrial:
    """The trial a Tune config names: its ``config["trial"]`` resolved by the study's planner."""
    spec = config["trial"]
    return planner_for(study_json).resolve(spec["assignment"], spec["seed"])


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

