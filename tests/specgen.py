"""Random valid ArchSpecs across every form, for property tests."""

from __future__ import annotations

import random

from rksearch.models import ArchSpec


def random_spec(rng: random.Random, max_stages: int = 4) -> ArchSpec:
    form = rng.choice(["explicit", "clique", "update"])
    imagenet = rng.random() < 0.15
    periods = 4 if imagenet else rng.choice([1, 2, 3])
    low = 2 if form == "clique" else 1
    per = lambda lo, hi: tuple(rng.randint(lo, hi) for _ in range(periods))  # noqa: E731
    # update form: u = 0 in some periods (explicit periods, as the 2022 code allows), never in all
    iterations = per(0, 3) if form == "update" else ()
    if form == "update" and not any(iterations):
        iterations = (rng.randint(1, 3),) + iterations[1:]
    return ArchSpec(
        stages=per(low, max_stages),
        steps=per(1, 2),
        growth=per(2, 12) if rng.random() < 0.3 else (rng.randint(2, 12),) * periods,
        groups=(1,) * periods if form == "clique" else per(1, 3),
        form=form,
        solver=rng.choice(["gauss-seidel", "jacobi"]) if form == "update" else "gauss-seidel",
        iterations=iterations,
        neck=rng.choice([None, 1, 2, 4]),
        attention=rng.random() < 0.5,
        multiscale=rng.random() < 0.6,
        dropout=rng.choice([0.0, 0.2]),
        stem="imagenet" if imagenet else "cifar",
        num_classes=rng.choice([10, 100]),
        style="rkcnn" if form == "update" or (form == "explicit" and rng.random() < 0.5) else "iclr",
    )
