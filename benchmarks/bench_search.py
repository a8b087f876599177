"""Search efficiency by replay (issue 16): how much of a full grid's compute each search strategy
needs to find the grid's best architecture, measured on one recorded grid replayed many times.

    python benchmarks/bench_search.py --record         # the recording only (reused when complete)
    python benchmarks/bench_search.py --jobs 3         # recording, every replay, the tables and the plot
    python benchmarks/bench_search.py --analyse-only   # the tables and the plot from the database

The recording is `benchmarks/search_space.yaml` (36 ERKNets and IRKNets on digits, 8 epochs),
trained once as a full grid.  Every strategy is the same file with only its name, `search` and
`scheduler` changed (so each replayed trial has a recorded trial's key), run with ``replay=``:
Ray Tune, Optuna and ASHA decide for real, and each trial reports the recorded epochs instead of
training.  One trial at a time (``search.max_concurrent=1``), so the order of the epochs is the
searcher's and the compute spent so far is the sum of the recorded seconds of the epochs replayed
so far (FLOPs likewise: epochs x training images x 3 x forward FLOPs).  Each seeded strategy
runs once per searcher seed, each seed its own study in the recording's database; a study that
is already complete there is read, not run again, so a second run only re-analyses.

Why replay rather than retraining: a strategy's result depends on its seed, so a fair comparison
needs many seeds per strategy, and each would cost a whole grid's training.  Replayed, the
comparison costs seconds per seed, and every strategy sees the very same curves (same noise).

Per strategy, over seeds (median and range): the compute to first reach within 0.5 points of
the grid's best validation accuracy, as a fraction of the grid's compute ("never" counted
apart); the trials started until then; the best validation accuracy found by 25% and 50% of
the grid's compute; the test accuracy of the trial each one picks (its best validation
accuracy; test never selects); the hypervolume of (validation accuracy, FLOPs) at 25/50/100%
of the compute against the grid's.  Then ASHA with random search over a small grid of
(grace_period, reduction_factor), which is how the `scheduler` defaults were chosen.
"""

from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml

SPACE = Path(__file__).with_name("search_space.yaml")
DEFAULT_DB = "sqlite:////tmp/bench_search/recording.db"
DEFAULT_CHECKPOINTS = "/tmp/bench_search/ck"
PLOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "search_efficiency.png"
#: "reached the grid's best": within half a point of validation accuracy
TOLERANCE = 0.005
#: the compute budgets (fractions of the grid's) at which the best found so far is reported
BUDGETS = (0.25, 0.5, 1.0)


# ---- the strategies ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Strategy:
    """One search strategy: the study file's overrides that make it, and whether its searcher
    takes a seed (grid in file order does not: one replay is all there is to measure)."""

    label: str
    slug: str
    overrides: tuple[str, ...]
    seeded: bool = True

    def study_name(self, seed: int) -> str:
        return f"bs_{self.slug}" + (f"_s{seed}" if self.seeded else "")

    def study_overrides(self, seed: int) -> list[str]:
        return [f"name={self.study_name(seed)}", "search.max_concurrent=1", f"search.seed={seed}", *self.overrides]


def asha(grace: int, reduction: float) -> tuple[str, ...]:
    """ASHA's overrides, its settings always written out: a replay study's name says which
    settings it ran, so changing the schema's defaults never passes an old replay off as new."""
    return ("scheduler.type=asha", f"scheduler.grace_period={grace}", f"scheduler.reduction_factor={reduction:g}")


def asha_slug(grace: int, reduction: float) -> str:
    return f"g{grace}r{reduction:g}"


def strategies(points: int, optuna_trials: int, grace: int, reduction: float) -> list[Strategy]:
    """The six strategies of issue 16 over a space of `points` configurations.  Random search
    draws 4 points per configuration with replacement and the planner drops repeats, so a random
    study is (almost always all of) the grid in a random order.  TPE and multi-objective train
    `optuna_trials` distinct points (`num_samples` counts trainings; Optuna's repeats are told
    their known result, not run): fewer than the grid, because once most of a small space is
    drawn Optuna draws mostly repeats, each redrawn on the driver, which made such replays the
    slowest of all."""
    random = ("search.algorithm=random", f"search.num_samples={4 * points}")
    tpe = ("search.algorithm=tpe", f"search.num_samples={optuna_trials}")
    return [
        Strategy("grid (file order)", "grid", ("search.algorithm=grid",), seeded=False),
        Strategy("random", "random", random),
        Strategy("TPE", "tpe", tpe),
        Strategy(f"ASHA + random ({asha_slug(grace, reduction)})", f"asha_{asha_slug(grace, reduction)}",
                 random + asha(grace, reduction)),
        Strategy(f"TPE + ASHA ({asha_slug(grace, reduction)})", f"tpe_asha_{asha_slug(grace, reduction)}",
                 tpe + asha(grace, reduction)),
        Strategy("multi-objective (acc, FLOPs)", "mo",
                 ("search.algorithm=multi_objective", f"search.num_samples={optuna_trials}", "search.cost=flops")),
    ]


def scheduler_grid(points: int, graces: list[int], reductions: list[float]) -> list[Strategy]:
    """ASHA with random search at every (grace_period, reduction_factor) asked for."""
    random = ("search.algorithm=random", f"search.num_samples={4 * points}")
    return [Strategy(f"ASHA + random ({asha_slug(g, r)})", f"asha_{asha_slug(g, r)}", random + asha(g, r))
            for g in graces for r in reductions]


# ---- the database ------------------------------------------------------------------------------

def study_status(engine: sa.Engine, name: str) -> str | None:
    from rksearch.store.schema import studies

    with engine.connect() as conn:
        return conn.execute(sa.select(studies.c.status).where(studies.c.name == name)).scalar_one_or_none()


def load_trials(engine: sa.Engine, name: str) -> pd.DataFrame:
    """One row per trial of study `name`: key, status, flops, training images, best validation
    and test accuracy."""
    from rksearch.store.schema import studies, trials

    query = (sa.select(trials.c.trial_key, trials.c.model_name, trials.c.dims, trials.c.status, trials.c.flops,
                       trials.c.train_images, trials.c.best_val_acc, trials.c.test_acc, trials.c.epochs_done)
             .join(studies, studies.c.id == trials.c.study_id).where(studies.c.name == name)
             .order_by(trials.c.id))
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all(),
                            columns=["trial_key", "model_name", "dims", "status", "flops", "train_images",
                                     "best_val_acc", "test_acc", "epochs_done"])


def load_epochs(engine: sa.Engine, name: str) -> pd.DataFrame:
    """Every epoch of study `name` in the order it was recorded (one trial at a time under
    replay: the searcher's order)."""
    from rksearch.store.schema import epochs, studies, trials

    query = (sa.select(trials.c.trial_key, epochs.c.epoch, epochs.c.val_acc, epochs.c.seconds)
             .join(trials, trials.c.id == epochs.c.trial_id).join(studies, studies.c.id == trials.c.study_id)
             .where(studies.c.name == name).order_by(epochs.c.recorded_at, epochs.c.id))
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all(), columns=["trial_key", "epoch", "val_acc", "seconds"])


# ---- the analysis (pure functions of frames: tests/test_bench_search.py) ----------------------

@dataclass
class Recording:
    """The full grid as recorded: what each epoch cost, each trial's FLOPs and results, and the
    totals every strategy is measured against."""

    seconds: dict[tuple[str, int], float]  # (trial key, epoch) -> recorded seconds
    epoch_flops: dict[str, float]  # trial key -> training FLOPs of one epoch
    flops: dict[str, float]  # trial key -> forward FLOPs (the multi-objective cost)
    best_val: float
    trials: pd.DataFrame

    @classmethod
    def of(cls, trials: pd.DataFrame, epochs: pd.DataFrame) -> Recording:
        done = trials[trials.best_val_acc.notna()]
        # every trial of a study trains on the same images; a recording from before the store kept
        # the count (revision 0006) has none, and 1 then gives the same fractions (it cancels)
        images = pd.to_numeric(done.train_images).fillna(pd.to_numeric(done.train_images).max()).fillna(1)
        return cls(
            seconds={(k, int(e)): float(s) for k, e, s in zip(epochs.trial_key, epochs.epoch, epochs.seconds)},
            # the stated convention of store.compute: training = 3 x forward, per training image
            epoch_flops={k: 3.0 * f * n for k, f, n in zip(done.trial_key, done.flops, images)},
            flops={k: float(f) for k, f in zip(done.trial_key, done.flops)},
            best_val=float(done.best_val_acc.max()), trials=done)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def total_flops(self) -> float:
        return sum(self.epoch_flops[k] for k, _ in self.seconds)

    @property
    def hypervolume(self) -> float:
        """The full grid's hypervolume of (best validation accuracy, FLOPs): every strategy's is a fraction of it."""
        return hypervolume(list(zip(self.trials.best_val_acc, self.trials.flops.astype(float))), self.flops_ref)

    @property
    def flops_ref(self) -> float:
        """The hypervolume's reference cost: the grid's most expensive model."""
        return max(self.flops.values())


def curve(epochs: pd.DataFrame, rec: Recording) -> pd.DataFrame:
    """A replay's epochs in order with the compute spent so far (fractions of the grid's, by the
    recorded seconds and by FLOPs) and the best validation accuracy found so far."""
    out = epochs[["trial_key", "epoch", "val_acc"]].reset_index(drop=True).copy()
    seconds = [rec.seconds[(k, int(e))] for k, e in zip(out.trial_key, out.epoch)]
    out["compute"] = np.cumsum(seconds) / rec.total_seconds
    out["compute_flops"] = np.cumsum([rec.epoch_flops[k] for k in out.trial_key]) / rec.total_flops
    out["best"] = out.val_acc.cummax()
    out["trials"] = (~out.trial_key.duplicated()).cumsum()
    return out


def first_reach(c: pd.DataFrame, target: float) -> pd.Series | None:
    """The epoch row at which the best so far first comes within `TOLERANCE` of `target`; None:
    never."""
    hit = c[c.best >= target - TOLERANCE - 1e-9]
    return None if hit.empty else hit.iloc[0]


def best_at(c: pd.DataFrame, budget: float) -> float:
    """The best validation accuracy found with at most `budget` of the grid's compute (NaN when
    not even one epoch fits)."""
    within = c[c.compute <= budget + 1e-9]
    return float(within.best.iloc[-1]) if not within.empty else math.nan


def picked(trials: pd.DataFrame) -> pd.Series:
    """The trial a researcher would pick from this search: the best validation accuracy (the
    first such trial in the study's order on a tie).  Its test accuracy is what the search buys."""
    done = trials[trials.best_val_acc.notna()]
    return done.loc[done.best_val_acc.idxmax()]


def hypervolume(points: list[tuple[float, float]], flops_ref: float) -> float:
    """Area dominated by (accuracy up, FLOPs down) points inside [0, 1] x [0, flops_ref], FLOPs
    scaled by `flops_ref`: the integral over cost c of the best accuracy costing at most c."""
    area, best, last = 0.0, 0.0, 0.0
    for cost, acc in sorted((min(f / flops_ref, 1.0), a) for a, f in points):
        area += best * (cost - last)
        best, last = max(best, acc), cost
    return area + best * (1.0 - last)


def hypervolume_at(c: pd.DataFrame, budget: float, rec: Recording) -> float:
    """The hypervolume of the trials seen with at most `budget` of the compute, each at the
    best validation accuracy it had shown by then."""
    within = c[c.compute <= budget + 1e-9]
    seen = within.groupby("trial_key").val_acc.max()
    return hypervolume([(acc, rec.flops[k]) for k, acc in seen.items()], rec.flops_ref)


def measure(trials: pd.DataFrame, epochs: pd.DataFrame, rec: Recording) -> dict[str, float]:
    """One replay's numbers (NaN where it never reached the target)."""
    c = curve(epochs, rec)
    hit = first_reach(c, rec.best_val)
    choice = picked(trials)
    row = {"reach": math.nan, "reach_flops": math.nan, "reach_trials": math.nan,
           "spent": float(c.compute.iloc[-1]), "trained": int(c.trials.iloc[-1]),
           "picked_val": float(choice.best_val_acc),
           # a trial ASHA stopped has no test accuracy: it never reached the end that tests
           "picked_test": float(choice.test_acc) if pd.notna(choice.test_acc) else math.nan}
    if hit is not None:
        row.update(reach=float(hit.compute), reach_flops=float(hit.compute_flops), reach_trials=int(hit.trials))
    for b in BUDGETS:
        row[f"best@{b:g}"] = best_at(c, b)
        row[f"hv@{b:g}"] = hypervolume_at(c, b, rec)
    return row


def spread(values: pd.Series, fmt: str = "{:.2f}") -> str:
    """Median [min-max] of the seeds that have a value; '-' when none does."""
    v = values.dropna()
    if v.empty:
        return "-"
    if len(v) == 1:
        return fmt.format(v.iloc[0])
    return f"{fmt.format(v.median())} [{fmt.format(v.min())}-{fmt.format(v.max())}]"


def median_reach(values: pd.Series) -> float:
    """The median over all seeds with "never" as infinitely late (so it is "never" itself when
    more than half never reach)."""
    return float(np.median(values.fillna(np.inf)))


def summarise(runs: pd.DataFrame, rec: Recording, points: int) -> pd.DataFrame:
    """The table: one row per strategy over its seeds (`runs` has one row per replay)."""
    rows = []
    for label, g in runs.groupby("strategy", sort=False):
        never, med = int(g.reach.isna().sum()), median_reach(g.reach)
        rows.append({
            "strategy": label, "seeds": len(g),
            "compute to best (grid = 1)": ("never" if math.isinf(med) else f"{med:.2f}")
            + (f" [{g.reach.min():.2f}-{g.reach.max():.2f}]" if g.reach.notna().sum() > 1 else ""),
            "never": never,
            "FLOPs to best": spread(g.reach_flops),
            "trials to best": spread(g.reach_trials / points, "{:.0%}"),
            "best val @25%": spread(g["best@0.25"] * 100, "{:.1f}"),
            "best val @50%": spread(g["best@0.5"] * 100, "{:.1f}"),
            "compute spent": spread(g.spent),
            "picked: test acc": spread(g.picked_test * 100, "{:.1f}"),
            "HV @25/50/100% / grid": "/".join(f"{g[f'hv@{b:g}'].median() / rec.hypervolume:.2f}" for b in BUDGETS),
        })
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)])


def plot(curves: dict[str, list[pd.DataFrame]], rec: Recording, path: Path) -> None:
    """Best-so-far validation accuracy against the fraction of the grid's compute: per strategy
    the median over seeds and its interquartile band."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(0, 1, 401)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, cs in curves.items():
        ys = np.array([[best_at(c, x) for x in xs] for c in cs]) * 100
        with warnings.catch_warnings():  # before any run's first epoch ends: all NaN, nothing drawn
            warnings.simplefilter("ignore", RuntimeWarning)
            median, low, high = (np.nanmedian(ys, axis=0), np.nanpercentile(ys, 25, axis=0),
                                 np.nanpercentile(ys, 75, axis=0))
        (line,) = ax.plot(xs, median, label=f"{label} (n={len(cs)})")
        if len(cs) > 1:
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    ax.axhline(rec.best_val * 100, color="k", lw=0.8, ls="--", label="grid's best")
    ax.axhline((rec.best_val - TOLERANCE) * 100, color="k", lw=0.5, ls=":", label="within 0.5 points")
    ax.set_xlabel("compute spent (fraction of the full grid's recorded seconds)")
    ax.set_ylabel("best validation accuracy so far (%)")
    low = np.nanpercentile(rec.trials.best_val_acc * 100, 50)
    ax.set_ylim(low, rec.best_val * 100 + 1)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Search efficiency by replay: {len(rec.trials)} RKCNNs on digits (median, IQR over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- running it ------------------------------------------------------------------------------

def record(url: str, checkpoints: str, space: Path, recording: str) -> None:
    """Train the recording once; a complete one in the database is reused, an interrupted one
    continued."""
    import rksearch

    status = study_status(sa.create_engine(url), recording)
    if status == "completed":
        print(f"recording: {recording} complete in {url}, reused")
        return
    started = time.monotonic()
    print(f"recording: training {recording}, the full grid", flush=True)
    rksearch.run_study(space, storage=url, storage_path=checkpoints, resume=status is not None)
    print(f"recording: done in {time.monotonic() - started:.0f} s", flush=True)


def replay(url: str, checkpoints: str, space: Path, recording: str, strategy: Strategy, seed: int) -> str:
    """Replay one strategy at one seed unless its study is complete in the database already."""
    import rksearch

    name = strategy.study_name(seed)
    status = study_status(sa.create_engine(url), name)
    if status == "completed":
        return "reused"
    started = time.monotonic()
    # the live view of each replay would flood the terminal: one line per replay is printed instead
    rksearch.run_study(space, strategy.study_overrides(seed), storage=url, storage_path=checkpoints,
                       resume=status is not None, replay=recording, stream=io.StringIO(), preflight=False)
    return f"{time.monotonic() - started:.1f} s"


def run_slice(url: str, checkpoints: str, space: Path, recording: str, jobs: list[tuple[Strategy, int]], tag: str) -> None:
    """Replays one after another in this process, on one Ray started here (run_study leaves a Ray
    it did not start running, so Ray starts once per process, not once per replay)."""
    import logging

    import optuna
    import ray

    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                 logging_level=logging.WARNING)
    # Tune's end-of-fit "could not fetch metrics" (its result files are off, see main) and
    # Optuna's "study created" lines, once per replay, would bury the progress lines
    logging.getLogger("ray").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.monotonic()
    for i, (strategy, seed) in enumerate(jobs, 1):
        took = replay(url, checkpoints, space, recording, strategy, seed)
        print(f"{tag}[{i}/{len(jobs)}] {strategy.study_name(seed)}: {took} "
              f"(elapsed {time.monotonic() - started:.0f} s)", flush=True)
    if own_ray:  # before the pool ends this process: Ray's exit handlers then have nothing to say
        ray.shutdown()


def run_all(url: str, checkpoints: str, space: Path, recording: str, jobs: list[tuple[Strategy, int]],
            workers: int) -> None:
    """Every replay, in `workers` processes (each its own Ray) taking every workers-th job.  A
    replay is mostly waiting on Ray's round trip per reported epoch, so processes overlap well:
    on 2 shared cores 3 processes ran 101 replays in 920 s (9 s a replay), one replay alone
    taking 15-55 s there."""
    if workers <= 1:
        run_slice(url, checkpoints, space, recording, jobs, "")
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.starmap(run_slice, [(url, checkpoints, space, recording, jobs[i::workers], f"w{i} ")
                                 for i in range(workers)])


def collect(engine: sa.Engine, rec: Recording, jobs: list[tuple[Strategy, int]]) -> tuple[pd.DataFrame, dict]:
    rows, curves = [], {}
    for strategy, seed in jobs:
        name = strategy.study_name(seed)
        if study_status(engine, name) != "completed":
            print(f"warning: replay {name} is not complete; left out", file=sys.stderr)
            continue
        trials, epochs = load_trials(engine, name), load_epochs(engine, name)
        rows.append({"strategy": strategy.label, "seed": seed, **measure(trials, epochs, rec)})
        curves.setdefault(strategy.label, []).append(curve(epochs, rec))
    return pd.DataFrame(rows), curves


def grid_rows(engine: sa.Engine, space: Path, recording: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The recording's trials and epochs that the space file plans now: an earlier draft's
    trials (linked into the recording by `reuse`, or left by a resumed one) are not the grid."""
    from rksearch.api import load_study, planned_trials

    keys = {t.key for t in planned_trials(load_study(space)[0]) if t.runnable}
    trials, epochs = load_trials(engine, recording), load_epochs(engine, recording)
    return trials[trials.trial_key.isin(keys)], epochs[epochs.trial_key.isin(keys)]


def check_grid(engine: sa.Engine, rec: Recording, grid: Strategy) -> str:
    """Does the replayed grid reproduce every recorded trial's best validation accuracy exactly?"""
    replayed = load_trials(engine, grid.study_name(0)).set_index("trial_key").best_val_acc
    recorded = rec.trials.set_index("trial_key").best_val_acc
    same = int((replayed.reindex(recorded.index) == recorded).sum())
    return f"the replayed grid reproduces {same}/{len(recorded)} recorded best validation accuracies exactly"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Tune's own per-trial result files (JSON, CSV, TensorBoard): nothing here reads them (the
    # database holds every epoch), and writing them was about half of a replay's time
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--space", type=Path, default=SPACE, help="the recorded grid's study file (another one: "
                    "a quick check of this script on a small recording, e.g. studies/quickstart.yaml)")
    ap.add_argument("--storage", default=DEFAULT_DB, help="the database of the recording and of every replay")
    ap.add_argument("--storage-path", default=DEFAULT_CHECKPOINTS, help="checkpoints and Ray logs")
    ap.add_argument("--record", action="store_true", help="record (or reuse) the grid, then stop")
    ap.add_argument("--seeds", type=int, default=10, help="searcher seeds per seeded strategy")
    ap.add_argument("--grace", default="1,2,4", help="ASHA grace periods tried for the scheduler defaults")
    ap.add_argument("--reduction", default="2,3", help="ASHA reduction factors tried for the scheduler defaults")
    ap.add_argument("--optuna-trials", type=int, help="trials of TPE and multi-objective (default: 2/3 of the grid)")
    ap.add_argument("--analyse-only", action="store_true", help="run no replay: analyse the complete ones")
    ap.add_argument("--jobs", type=int, default=2, help="replay processes at once")
    ap.add_argument("--plot", type=Path, default=PLOT)
    args = ap.parse_args(argv)

    from rksearch.search.schema import Scheduler

    recording = yaml.safe_load(args.space.read_text())["name"]
    Path(args.storage_path).mkdir(parents=True, exist_ok=True)
    if args.storage.startswith("sqlite:///"):
        Path(args.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        record(args.storage, args.storage_path, args.space, recording)
    if args.record:
        return 0
    engine = sa.create_engine(args.storage)
    rec = Recording.of(*grid_rows(engine, args.space, recording))
    points = len(rec.trials)
    if points == 0:
        raise SystemExit(f"recording {recording}: none of its completed trials is a point of {args.space}")
    print(f"recording: {points} trials, best validation accuracy {rec.best_val:.2%}, "
          f"{rec.total_seconds:.0f} s of recorded epochs, {rec.total_flops / 1e12:.2f} TFLOPs of training")

    default = Scheduler()
    main_set = strategies(points, args.optuna_trials or points * 2 // 3, default.grace_period,
                          default.reduction_factor)
    graces = [int(g) for g in args.grace.split(",")]
    reductions = [float(r) for r in args.reduction.split(",")]
    sched_set = scheduler_grid(points, graces, reductions)
    seeds = range(args.seeds)
    jobs = [(s, seed) for s in main_set for seed in (seeds if s.seeded else [0])]
    sched_jobs = [(s, seed) for s in sched_set for seed in seeds]
    todo = [job for job in jobs + sched_jobs if study_status(engine, job[0].study_name(job[1])) != "completed"]
    todo = list(dict.fromkeys(todo))  # the default ASHA is in both lists
    started = time.monotonic()
    if todo and not args.analyse_only:
        run_all(args.storage, args.storage_path, args.space, recording, todo, args.jobs)
    print(f"replays: {0 if args.analyse_only else len(todo)} run in {time.monotonic() - started:.0f} s, "
          f"{len(set(jobs + sched_jobs)) - len(todo)} complete before")

    print(check_grid(engine, rec, main_set[0]))
    runs, curves = collect(engine, rec, jobs)
    print(f"\nstrategies ({args.seeds} searcher seeds each; compute = recorded epoch seconds, grid = 1):\n")
    print(markdown(summarise(runs, rec, points)))
    agreement = rank_agreement(grid_rows(engine, args.space, recording)[1])
    print("\nrank correlation of each epoch's validation accuracy with the last epoch's (the recording): "
          + ", ".join(f"{e}: {r:.2f}" for e, r in agreement.items()))
    sched_runs, _ = collect(engine, rec, sched_jobs)
    print("\nASHA + random at each (grace_period, reduction_factor):\n")
    print(markdown(summarise(sched_runs, rec, points)))
    print(f"\nscheduler: {best_scheduler(sched_runs)} misses the grid's best least often, reaches it soonest, "
          "and spends the least (in that order)")
    goals(runs, main_set, points)
    plot(curves, rec, args.plot)
    print(f"\nplot: {args.plot}")
    return 0


def rank_agreement(epochs: pd.DataFrame) -> pd.Series:
    """Per epoch, the Spearman correlation of the trials' validation accuracy then with their
    accuracy at the last epoch: how well a rung at that epoch ranks what training to the end
    would rank (what ASHA's grace period has to wait for)."""
    table = epochs.pivot_table(index="trial_key", columns="epoch", values="val_acc")
    return table.corrwith(table[table.columns.max()], method="spearman")


def best_scheduler(runs: pd.DataFrame) -> str:
    """The ASHA setting to default to: the fewest seeds that never reach the grid's best (a setting
    that saves compute by pruning the best trial saves nothing), then the least median compute to
    reach it at the table's precision, then the least compute spent in all."""
    score = runs.groupby("strategy").agg(never=("reach", lambda r: int(r.isna().sum())),
                                         reach=("reach", lambda r: round(median_reach(r), 2)),
                                         spent=("spent", "median"))
    return str(score.sort_values(["never", "reach", "spent"]).index[0])


def goals(runs: pd.DataFrame, main_set: list[Strategy], points: int) -> None:
    """Issue 16's goals, on the medians over seeds."""
    by = {s.slug.split("_g")[0]: s.label for s in main_set}
    asha_reach = median_reach(runs[runs.strategy == by["asha"]].reach)
    tpe_trials = median_reach(runs[runs.strategy == by["tpe"]].reach_trials) / points
    print(f"\ngoal: ASHA reaches the grid's best with <= 40% of its compute: median {percent(asha_reach)} -> "
          f"{'met' if asha_reach <= 0.4 else 'NOT met'}")
    print(f"goal: TPE reaches it with <= 50% of the grid's trials: median {percent(tpe_trials)} -> "
          f"{'met' if tpe_trials <= 0.5 else 'NOT met'}")


def percent(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.0%}"


if __name__ == "__main__":
    sys.exit(main())
