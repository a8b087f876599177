"""Epoch rows per second through the StoreCallback path, on SQLite and PostgreSQL.

The goal (issue 5): the store costs under 1% of a study's wall time at one report per epoch,
i.e. it must take >= 500 epoch rows/s.  Each run also times a plain `executemany` insert of the
same number of rows in one transaction: the fastest the database takes these rows at all, so
the ratio shows what the per-epoch transaction and the trial-summary refresh cost.

    python benchmarks/bench_store.py                       # SQLite in a temp dir
    bash -c 'source .ci/postgres.sh; python benchmarks/bench_store.py'   # + PostgreSQL
    python benchmarks/bench_store.py --postgres URL        # an existing server (empty database)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from storeload import FakeTrial, describe, epoch_result  # noqa: E402

from rksearch.store import StoreCallback, open_store  # noqa: E402
from rksearch.store.schema import epochs, trials  # noqa: E402
from rksearch.store.writer import EPOCH_METRICS  # noqa: E402

GOAL_ROWS_PER_S = 500.0


def callback_rate(url: str, n_trials: int, n_epochs: int) -> float:
    """Epoch rows/s of `on_trial_result`, one trial after another as a driver receives them."""
    store = open_store(url)
    study = store.begin_study(f"bench-{time.time_ns()}", "bench")
    callback = StoreCallback(store, study, describe)
    trials = [FakeTrial(f"b{n}", {"key": f"bench{study}-{n}", "k": 12}) for n in range(n_trials)]
    for trial in trials:
        callback.on_trial_start(0, [], trial)
    start = time.perf_counter()
    for epoch in range(1, n_epochs + 1):  # trials interleave, as concurrent trials' reports do
        for number, trial in enumerate(trials):
            callback.on_trial_result(0, [], trial, epoch_result(number, epoch))
    elapsed = time.perf_counter() - start
    store.close()
    return n_trials * n_epochs / elapsed


def executemany_rate(url: str, n_rows: int) -> float:
    """Epoch rows/s of one plain multi-row INSERT in one transaction (the database's floor)."""
    store = open_store(url)
    study = store.begin_study(f"baseline-{time.time_ns()}", "bench")
    info = describe({"key": f"baseline{study}", "k": 12})
    store.trial_started(study, info)
    with store.engine.connect() as conn:
        trial_id = conn.execute(sa.select(trials.c.id).where(trials.c.trial_key == info.trial_key)).scalar_one()
    now = datetime.now(timezone.utc)
    rows = [{"trial_id": trial_id, "epoch": e, "recorded_at": now,
             **{m: epoch_result(0, e).get(m) for m in EPOCH_METRICS}} for e in range(1, n_rows + 1)]  # fmt: skip
    start = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(epochs.insert(), rows)
    elapsed = time.perf_counter() - start
    store.close()
    return n_rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("RKSEARCH_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: $RKSEARCH_TEST_POSTGRES_URL; skipped if unset)")  # fmt: skip
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        if args.postgres:
            backends["postgresql"] = args.postgres
        n_rows = args.trials * args.epochs
        print(f"{n_rows} epoch rows ({args.trials} trials x {args.epochs} epochs); goal {GOAL_ROWS_PER_S:.0f} rows/s")
        print("| backend | callback rows/s | vs goal | executemany rows/s | callback / executemany |")
        print("|---|---:|---:|---:|---:|")
        for name, url in backends.items():
            callback = callback_rate(url, args.trials, args.epochs)
            baseline = executemany_rate(url, n_rows)
            print(f"| {name} | {callback:,.0f} | {callback / GOAL_ROWS_PER_S:.1f}x | {baseline:,.0f} "
                  f"| {callback / baseline:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
