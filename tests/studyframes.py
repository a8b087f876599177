"""Hand-made study frames in the shape of `rksearch.results.load` / `load_epochs`.

The numbers are chosen so the expected plots, tables and statistics can be worked out by hand
(see the comments; errors are written in percent here and stored as fractions, as `load` does).
Like `load`, each frame lists its search dimensions in `attrs["dims"]`.
"""

from __future__ import annotations

import pandas as pd

from rksearch.store import TrialInfo, open_store

# family (for reading only: the code derives it from the name), model name, stages, form,
# params, flops, {seed: error %} (the test error, and the best validation error, of each trial)
_MODELS = [
    # ERKNet means 6.2, 5.7, 5.8, 5.1: front by params and by FLOPs drops the 5.8 one
    ("ERKNet", "ERKNet-6x1 6x1 6x1", (6, 6, 6), "explicit", 740_000, 660_000_000, {0: 6.0, 1: 6.4}),
    ("ERKNet", "ERKNet-7x1 6x1 6x1", (7, 6, 6), "explicit", 830_000, 830_000_000, {0: 5.5, 1: 5.9}),
    ("ERKNet", "ERKNet-7x1 7x1 6x1", (7, 7, 6), "explicit", 910_000, 870_000_000, {0: 5.8, 1: 5.8}),
    ("ERKNet", "ERKNet-7x1 7x1 7x1", (7, 7, 7), "explicit", 990_000, 880_000_000, {0: 5.0, 1: 5.2}),
    # IRKNet means 6.6, 5.5, 5.7: the largest one is dominated
    ("IRKNet", "IRKNet-3x1 3x1 3x1", (3, 3, 3), "clique", 450_000, 400_000_000, {0: 6.5, 1: 6.7}),
    ("IRKNet", "IRKNet-4x1 4x1 4x1", (4, 4, 4), "clique", 700_000, 650_000_000, {0: 5.6, 1: 5.4}),
    ("IRKNet", "IRKNet-5x1 5x1 5x1", (5, 5, 5), "clique", 1_000_000, 950_000_000, {0: 5.6, 1: 5.8}),
    # one seed only
    ("DenseNet", "DenseNet-BC-100", None, None, 800_000, 580_000_000, {0: 6.9}),
]


FIGURE4_DIMS = ["stages", "growth", "form"]

#: the columns of `results.load` around the search dimensions, in its order
TRIAL_HEAD = ["study", "trial_id", "trial_key", "model_name", "canonical"]
TRIAL_TAIL = [
    "seed", "params", "flops", "macs", "validation", "best_epoch",
    "best_val_acc", "best_val_error", "final_val_acc", "final_val_error",
    "test_acc", "test_error", "test_acc_final", "test_error_final",
    "epochs", "wall_seconds", "status", "failure", "error", "device", "node", "code_version",
    "started_at", "finished_at", "reused_from", "best_checkpoint", "last_checkpoint",
]  # fmt: skip


def trial_row(trial_id: int, name: str, stages, form, params: int, flops: int, seed: int,
              error: float | None, status: str = "completed") -> dict:  # fmt: skip
    """One trial; `error` in percent (None: no result), selected on a validation holdout.

    `error` is both the best-epoch validation error and the test error of that checkpoint
    (best_val_* == test_*), so hand-worked numbers hold whichever of the two a caller reads;
    the final-epoch numbers are 0.1 point worse.  Only a completed trial has test numbers
    (a pruned one stopped before the test evaluation), as in `results.load`.
    """
    acc = None if error is None else 1.0 - error / 100.0
    tested = acc is not None and status == "completed"
    checkpoints = f"/ckpt/fig4/trial{trial_id}"
    return {
        "study": "fig4",
        "trial_id": trial_id,
        "trial_key": f"key{trial_id}",
        "model_name": name,
        "canonical": f"{name} (k=36)",
        "seed": seed,
        "params": params,
        "flops": flops,
        "macs": flops // 2,
        "validation": "holdout",
        "best_epoch": None if acc is None else (290 if status == "completed" else 12),
        "best_val_acc": acc,
        "best_val_error": None if acc is None else 1.0 - acc,
        "final_val_acc": None if acc is None else acc - 0.001,
        "final_val_error": None if acc is None else 1.0 - acc + 0.001,
        "test_acc": acc if tested else None,
        "test_error": 1.0 - acc if tested else None,
        "test_acc_final": acc - 0.001 if tested else None,
        "test_error_final": 1.0 - acc + 0.001 if tested else None,
        "epochs": 300 if status == "completed" else 12,
        "wall_seconds": 3600.0,
        "status": status,
        "failure": "out_of_memory" if status == "failed" else None,
        "error": None if status != "failed" else "CUDA out of memory",
        "device": "cuda:0",
        "node": "node-1",
        "code_version": "0.1.0+gabc1234",
        "started_at": pd.Timestamp("2024-01-01 00:00", tz="UTC") + pd.Timedelta(hours=trial_id),
        "finished_at": pd.Timestamp("2024-01-01 01:00", tz="UTC") + pd.Timedelta(hours=trial_id),
        "reused_from": None,
        "best_checkpoint": f"{checkpoints}/best" if tested else None,
        "last_checkpoint": f"{checkpoints}/last" if acc is not None else None,
        "stages": stages,
        "growth": 36,
        "form": form,
    }


def set_acc(row: dict, acc: float) -> dict:
    """`row` with an exact accuracy (not 1 - error / 100 rounded twice) in every metric column."""
    final = acc - 0.001
    row.update(best_val_acc=acc, best_val_error=1.0 - acc, final_val_acc=final, final_val_error=1.0 - final)
    if row["status"] == "completed":
        row.update(test_acc=acc, test_error=1.0 - acc, test_acc_final=final, test_error_final=1.0 - final)
    return row


def figure4_frame() -> pd.DataFrame:
    """Three families, two seeds for the RKNets, plus a failed and a pruned trial to ignore."""
    rows = []
    for _family, name, stages, form, params, flops, errors in _MODELS:
        for seed, error in errors.items():
            rows.append(trial_row(len(rows) + 1, name, stages, form, params, flops, seed, error))
    rows.append(trial_row(len(rows) + 1, "ERKNet-8x1 8x1 8x1", (8, 8, 8), "explicit",
                          1_200_000, 1_100_000_000, 0, None, status="failed"))  # fmt: skip
    rows.append(trial_row(len(rows) + 1, "IRKNet-2x1 2x1 2x1", (2, 2, 2), "clique",
                          300_000, 250_000_000, 0, 1.0, status="pruned"))  # fmt: skip
    return _framed(rows, FIGURE4_DIMS)


def _framed(rows: list[dict], dims: list[str]) -> pd.DataFrame:
    """The rows as `results.load` orders its columns: head, search dimensions, tail."""
    frame = pd.DataFrame(rows)
    frame = frame[[*TRIAL_HEAD, *dims, *TRIAL_TAIL]]
    frame.attrs["dims"] = dims
    return frame


#: accuracy of the base configuration per seed, and the exact paired effects of the OFAT study
OFAT_BASE = {0: 0.78, 1: 0.84, 2: 0.81}
OFAT_EFFECTS = {
    ("attention", True): {0: 0.02, 1: 0.02, 2: 0.02},  # consistent gain: CI excludes zero
    ("multiscale", False): {0: -0.01, 1: 0.01, 2: 0.0},  # noise: CI covers zero
    ("growth", 24): {0: 0.03},  # one seed only: flagged
}


def ofat_frame() -> pd.DataFrame:
    """One-factor-at-a-time study around attention=False, multiscale=True, growth=12."""
    base = {"attention": False, "multiscale": True, "growth": 12}
    configs = [(base, OFAT_BASE)]
    for (factor, level), effects in OFAT_EFFECTS.items():
        values = {seed: OFAT_BASE[seed] + delta for seed, delta in effects.items()}
        configs.append(({**base, factor: level}, values))
    rows = []
    for knobs, values in configs:
        for seed, acc in values.items():
            row = trial_row(len(rows) + 1, "RKCNN-E-3_3_3", (3, 3, 3), "explicit",
                            100_000, 10_000_000, seed, 100.0 * (1.0 - acc))  # fmt: skip
            row.pop("stages")
            row.pop("form")
            row.update(knobs)
            rows.append(set_acc(row, acc))
    return _framed(rows, list(base))


#: additive 2x2 grid: main effect of depth 'deep' is +0.05, of lr 0.05 is +0.01, per seed
GRID_SEED_EFFECT = {0: 0.0, 1: 0.03, 2: -0.02}


def grid_frame() -> pd.DataFrame:
    rows = []
    for depth in ("shallow", "deep"):
        for lr in (0.1, 0.05):
            for seed, seed_effect in GRID_SEED_EFFECT.items():
                acc = 0.7 + 0.05 * (depth == "deep") + 0.01 * (lr == 0.05) + seed_effect
                row = trial_row(len(rows) + 1, f"RKCNN-E-{depth}", None, "explicit",
                                100_000, 10_000_000, seed, 100.0 * (1.0 - acc))  # fmt: skip
                row.pop("stages")
                row.pop("form")
                row.pop("growth")
                row.update({"depth": depth, "lr": lr})
                rows.append(set_acc(row, acc))
    return _framed(rows, ["depth", "lr"])


def store_frame(url: str, study: str, frame: pd.DataFrame, n_epochs: int = 4, with_test: bool = False) -> None:
    """Write a hand-made frame into a store as study `study`, through the real writer API.

    Each trial with a result gets `n_epochs` epochs whose accuracy rises by 5 points an epoch
    to the frame's `best_val_acc` at the last one, so the stored best (and final) validation
    accuracy is exactly the frame's and a learning curve's last point is known.  Trials
    without a result (failed) get no epochs.

    By default the stored study has no test numbers and no selection split (`results.load`
    gives test_* NaN and validation None, like a database from before they were recorded).
    With `with_test` it is stored as the current code records one: the config's
    data.validation is the frame's `validation`, and the last epoch's report carries the
    frame's test_acc / test_acc_final (NaN ones stored as missing) and best_epoch = n_epochs,
    so `results.load` gives back the frame's test and validation columns.  A skipped row is
    recorded as skipped (never started).
    """
    store = open_store(url)
    try:
        study_id = store.begin_study(study, f"name: {study}\n")
        for _, row in frame.iterrows():
            key = str(row["trial_key"])
            dims = {d: (list(row[d]) if isinstance(row[d], tuple) else row[d]) for d in frame.attrs["dims"]}
            info = TrialInfo(
                trial_key=key, model_name=row["model_name"], canonical=row["canonical"], dims=dims,
                config={"model": row["model_name"], **dims,
                        **({"data": {"validation": row["validation"]}} if with_test else {})},
                params=int(row["params"]),
                flops=int(row["flops"]), macs=int(row["macs"]), seed=int(row["seed"]),
            )  # fmt: skip
            if row["status"] == "skipped":  # never started: recorded with its reason, as the engine does
                store.record_skipped(study_id, info, "needs 90 GiB, the largest GPU has 80 GiB")
                continue
            store.trial_started(study_id, info)
            if not pd.isna(row["best_val_acc"]):
                for epoch in range(1, n_epochs + 1):
                    acc = epoch_acc(row["best_val_acc"], epoch, n_epochs)
                    metrics = {"epoch": epoch, "val_acc": acc, "train_acc": acc, "val_loss": 1.0 - acc, "lr": 0.1,
                               "device": "cpu"}  # fmt: skip
                    if with_test and epoch == n_epochs:
                        metrics |= {"best_epoch": n_epochs, "test_acc": row["test_acc"],
                                    "test_acc_final": row["test_acc_final"]}  # fmt: skip
                    store.record_epoch(study_id, key, metrics)
            store.trial_finished(study_id, key, row["status"], error=row["error"], wall_seconds=60.0)
        store.finish_study(study_id, "completed")
    finally:
        store.close()


def epoch_acc(final_acc: float, epoch: int, n_epochs: int) -> float:
    """The accuracy `store_frame` records at `epoch`: 5 points an epoch below the last."""
    return float(final_acc) - 0.05 * (n_epochs - epoch)
