"""The engine's overhead: one study of tiny trials through `rksearch.search.engine.run_study` (Ray Tune,
SQLite store, checkpoints, progress view) against the very same trainings run by
`rksearch.training.loop.run_trial` in a plain `multiprocessing.Pool`, both two trials at a time with one
torch thread each (a fair baseline on a 2-core machine).  Goals: at most 1.10x the plain loop's wall
time at trials of about 10 s (issue 4), 1.05x at trials of about 6 s (issue 17).

    python benchmarks/bench_engine.py                    # 16 trials of about 10 s on CPU
    python benchmarks/bench_engine.py --epochs 2         # shorter trials: the overhead shows more
    python benchmarks/bench_engine.py --repeats 3        # 3 rounds, the order alternating; the median ratio
    ray start --head --num-cpus 2 && python benchmarks/bench_engine.py --address auto; ray stop
                                                         # the engine without Ray's start and stop

The trials are distinct small ERKNets on the bundled digits data set (no download); the plain
loop trains exactly the configs the planner gives the study's trials.  On a shared machine the
two sides see different loads: each round prints the load average before each side, rounds
alternate which side goes first, and the ratio to quote is the median over rounds.  Each side
also says where its time went outside the trials' epochs: the start (until the first trial
began training) and, per trial, the wall seconds beyond its epochs' own (data, model, and for
the study its per-epoch checkpoint and report, and the driver's callbacks).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from rksearch.search.loader import loads
from rksearch.search.planner import Planner

STUDY = """
name: bench-engine
data: {{dataset: digits, batch_size: 64}}
train: {{epochs: {epochs}, schedule: cosine}}
runtime: {{device: cpu, threads: 1}}
model: {{periods: 3, steps: 1}}
space:
  stages: [1, 2]
  growth: [{growths}]
search: {{algorithm: grid, max_concurrent: {concurrency}}}
resources: {{cpu: 1}}
seeds: [{seeds}]
"""


def study_text(epochs: int, trials: int, concurrency: int) -> str:
    """A grid of `trials` distinct trials: 2 stage counts x 4 growth rates x trials/8 seeds."""
    if trials % 8:
        raise SystemExit("--trials must be a multiple of 8 (2 stage counts x 4 growth rates x seeds)")
    return STUDY.format(epochs=epochs, growths="8, 10, 12, 14", concurrency=concurrency,
                        seeds=", ".join(str(s) for s in range(trials // 8)))


class Side(NamedTuple):
    """One side's run: its wall seconds, each trial's, and where the time outside the epochs went."""

    wall: float
    trial_seconds: list[float]
    #: seconds from the side's start until its first trial started
    start: float
    #: per trial: wall seconds minus its epochs' own seconds
    outside_epochs: list[float]

    def describe(self) -> str:
        return (f"{self.wall:7.1f} s wall; trials {min(self.trial_seconds):.1f}-{max(self.trial_seconds):.1f} s "
                f"(mean {statistics.mean(self.trial_seconds):.1f} s); first trial after {self.start:.1f} s; "
                f"per trial {statistics.mean(self.outside_epochs):.2f} s outside its epochs")


def _train(config: dict) -> tuple[float, float, float]:
    """One plain trial in a pool worker (one torch thread: the config's `runtime.threads`): when it
    started (wall clock, comparable across processes), its seconds, and its epochs' seconds."""
    from rksearch.training.loop import run_trial

    began, started = time.time(), time.monotonic()
    result = run_trial(config)
    return began, time.monotonic() - started, sum(epoch["seconds"] for epoch in result.history)


def plain(configs: list[dict], concurrency: int, nice: int = 0) -> Side:
    began, started = time.time(), time.monotonic()
    with multiprocessing.get_context("spawn").Pool(concurrency, initializer=os.nice, initargs=(nice,)) as pool:
        runs = pool.map(_train, configs, chunksize=1)
    return Side(time.monotonic() - started, [seconds for _, seconds, _ in runs],
                min(start for start, _, _ in runs) - began, [seconds - epochs for _, seconds, epochs in runs])


def study(text: str, workdir: Path, address: str | None = None) -> Side:
    from rksearch.search.engine import run_study

    spec, text = loads(text)
    began, started = time.time(), time.monotonic()
    url = f"sqlite:///{workdir / 'bench.db'}"
    with open(os.devnull, "w") as quiet:
        run = run_study(spec, text, storage_url=url, storage_path=str(workdir / "runs"), stream=quiet,
                        preflight=False, address=address)
    wall = time.monotonic() - started
    if run.trained != run.planned:
        raise SystemExit(f"the study trained {run.trained} of {run.planned} trials: {run.problems or run.fatal}")
    return _from_store(url, began, wall)


def _from_store(url: str, began: float, wall: float) -> Side:
    """The study's side as its database recorded it: trial walls (the driver's, start to end) and
    epoch seconds (the workers')."""
    import sqlalchemy as sa

    from rksearch.store.schema import epochs, trials

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(trials.c.started_at, trials.c.wall_seconds, sa.func.sum(epochs.c.seconds))
                .join(epochs, epochs.c.trial_id == trials.c.id).group_by(trials.c.id)
            ).all()
    finally:
        engine.dispose()
    first = min(_utc(started).timestamp() for started, _, _ in rows)
    return Side(wall, [seconds for _, seconds, _ in rows], first - began,
                [seconds - in_epochs for _, seconds, in_epochs in rows])


def _utc(moment: datetime) -> datetime:
    """SQLite hands back the stored UTC times without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16, help="multiple of 8 (default 16)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per trial; sets the trial length (default 4: about 10 s on CPU)")
    ap.add_argument("--concurrency", type=int, default=2, help="trials at once, both sides (default 2)")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness of the plain loop's workers (default 0). Ray starts trial workers at 15 "
                         "(RAY_worker_niceness), so on a shared machine they yield to every other process and "
                         "the plain loop's do not: 15 gives both sides the same priority")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of both sides, the plain loop first in odd rounds, the study in even ones (default 1)")
    ap.add_argument("--address",
                    help="run the study on the Ray already running there (e.g. auto) instead of starting a local "
                         "one: the engine's cost without Ray's own start and stop, as on a cluster")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    text = study_text(args.epochs, args.trials, args.concurrency)
    trials = Planner(loads(text)[0]).plan()
    configs = [t.config for t in trials]
    print(f"{len(configs)} trials ({', '.join(sorted({t.model_name for t in trials}))}; k 8-14), "
          f"{args.epochs} epochs on digits, {args.concurrency} at a time, 1 thread each", flush=True)

    def run_plain() -> Side:
        print(f"  plain Pool({args.concurrency}) of run_trial, workers at niceness {args.nice} ({_load()})", flush=True)
        side = plain(configs, args.concurrency, args.nice)
        print(f"  plain Pool({args.concurrency}) of run_trial: {side.describe()}", flush=True)
        return side

    def run_study_side() -> Side:
        print(f"  study through run_study ({_load()})", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as work:
            side = study(text, Path(work), args.address)
        ray = f"on the Ray at {args.address}" if args.address else "Ray start-up included"
        print(f"  study through run_study:    {side.describe()} ({ray})", flush=True)
        return side

    ratios = []
    for round_ in range(1, args.repeats + 1):
        print(f"round {round_}/{args.repeats}", flush=True)
        if round_ % 2:
            base = run_plain()
            engine = run_study_side()
        else:
            engine = run_study_side()
            base = run_plain()
        ratios.append(engine.wall / base.wall)
        print(f"  overhead ratio {ratios[-1]:.3f}x; {(engine.wall - base.wall) / len(configs):+.2f} s per trial "
              f"({_load()})", flush=True)
    if args.repeats > 1:
        print(f"median ratio over {args.repeats} rounds {statistics.median(ratios):.3f}x "
              f"({', '.join(f'{r:.3f}' for r in ratios)}); goals <= 1.10x at ~10 s trials, 1.05x at ~6 s")


if __name__ == "__main__":
    main()
