"""The engine's overhead: one study of tiny trials through `rksearch.search.engine.run_study` (Ray Tune,
SQLite store, checkpoints, progress view) against the very same trainings run by
`rksearch.training.loop.run_trial` in a plain `multiprocessing.Pool`, both two trials at a time with one
torch thread each (a fair baseline on a 2-core machine).  Goal (issue 4): the study takes at most
1.10x the plain loop's wall time at trials of about 10 s.

    python benchmarks/bench_engine.py                    # 16 trials of about 10 s on CPU
    python benchmarks/bench_engine.py --epochs 2         # shorter trials: the overhead shows more

The trials are distinct small ERKNets on the bundled digits data set (no download); the plain
loop trains exactly the configs the planner gives the study's trials.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from rksearch.search.planner import Planner
from rksearch.search.loader import loads

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


def _train(config: dict) -> float:
    """One plain trial in a pool worker (one torch thread: the config's `runtime.threads`)."""
    from rksearch.training.loop import run_trial

    started = time.monotonic()
    run_trial(config)
    return time.monotonic() - started


def plain(configs: list[dict], concurrency: int) -> tuple[float, list[float]]:
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(concurrency) as pool:
        seconds = pool.map(_train, configs, chunksize=1)
    return time.monotonic() - started, seconds


def study(text: str, workdir: Path) -> tuple[float, int]:
    from rksearch.search.engine import run_study

    spec, text = loads(text)
    started = time.monotonic()
    with open(os.devnull, "w") as quiet:
        run = run_study(spec, text, storage_url=f"sqlite:///{workdir / 'bench.db'}",
                        storage_path=str(workdir / "runs"), stream=quiet, preflight=False)
    return time.monotonic() - started, run.trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16, help="multiple of 8 (default 16)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per trial; sets the trial length (default 4: about 10 s on CPU)")
    ap.add_argument("--concurrency", type=int, default=2, help="trials at once, both sides (default 2)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    text = study_text(args.epochs, args.trials, args.concurrency)
    trials = Planner(loads(text)[0]).plan()
    configs = [t.config for t in trials]
    print(f"{len(configs)} trials ({', '.join(sorted({t.model_name for t in trials}))}; k 8-14), "
          f"{args.epochs} epochs on digits, {args.concurrency} at a time, 1 thread each")

    plain_s, per_trial = plain(configs, args.concurrency)
    print(f"plain Pool({args.concurrency}) of run_trial: {plain_s:7.1f} s wall; "
          f"trials {min(per_trial):.1f}-{max(per_trial):.1f} s (mean {sum(per_trial) / len(per_trial):.1f} s)")
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as work:
        study_s, trained = study(text, Path(work))
    print(f"study through run_study:    {study_s:7.1f} s wall ({trained} trained; Ray start-up included)")
    overhead = (study_s - plain_s) / len(configs)
    print(f"overhead ratio {study_s / plain_s:.3f}x (goal <= 1.10x at ~10 s trials); "
          f"{overhead:+.2f} s per trial")


if __name__ == "__main__":
    main()
