"""The ``--dry-run`` table: every planned trial with its cost and what will happen to it, nothing trained."""

from __future__ import annotations

from typing import Iterator

from rksearch.models.cost import human_bytes
from rksearch.search.planner import PlannedTrial


def describe(trials: list[PlannedTrial]) -> Iterator[str]:
    """Lines of a dry-run table: model, searched values, params, FLOPs, memory to train, what will happen."""
    rows = [(t.model_name, " ".join(f"{k}={v}" for k, v in t.assignment.items())) for t in trials]
    name_w = max([len(n) for n, _ in rows] + [5])
    dims_w = max([len(d) for _, d in rows] + [6])
    yield (f"{'#':>4}  {'model':<{name_w}}  {'values':<{dims_w}}  {'seed':>4}  {'params':>9}  {'GFLOPs':>8}  "
           f"{'memory':>6}  plan")
    for i, (t, (name, dims)) in enumerate(zip(trials, rows), 1):
        params = f"{t.cost.params / 1e6:.3f}M" if t.cost else "-"
        flops = f"{t.cost.flops / 1e9:.3f}" if t.cost else "-"
        memory = human_bytes(t.memory.total, compact=True) if t.memory else "-"
        yield (f"{i:>4}  {name:<{name_w}}  {dims:<{dims_w}}  {t.seed:>4}  {params:>9}  {flops:>8}  {memory:>6}  "
               f"{t.problem or 'train'}")
