"""Drive the store the way Ray Tune does: fake trials through `StoreCallback`.

Shared by the store tests and the store benchmark.  A real Tune run would add a Ray start-up
(tens of seconds on the test machine) without exercising anything more of the store: the
callback only reads `trial_id`, `config`, `last_result`, `error_file` and
`get_error()` from the trial, which `FakeTrial` provides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rksearch.store import Store, StoreCallback, TrialInfo, open_store


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    last_result: dict = field(default_factory=dict)
    error_file: str | None = None
    error: str | None = None

    def get_error(self) -> str | None:
        return self.error


def describe(config: dict) -> TrialInfo:
    """TrialInfo from a config holding `key` and `k` (growth rate: the one search dimension)."""
    k = config["k"]
    return TrialInfo(
        trial_key=config["key"], model_name="ERKNet-2x1 2x1 2x1", canonical=f"ERKNet k={k}",
        dims={"k": k, "stages": [2, 2, 2]}, config=dict(config), params=1000 * k, flops=10**6 * k,
        macs=10**6 * k // 2, seed=config.get("seed", 0),
    )  # fmt: skip


def val_acc(trial: int, epoch: int) -> float:
    """A known, epoch-increasing accuracy, so readers can check what they see."""
    return round(0.5 + 0.01 * epoch + 0.001 * trial, 6)


def epoch_result(trial: int, epoch: int) -> dict:
    return {
        "epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.4 + 0.01 * epoch, "val_loss": 1.1 / epoch,
        "val_acc": val_acc(trial, epoch), "lr": 0.1, "seconds": 1.5, "images_per_s": 900.0,
        "best_val_acc": val_acc(trial, epoch), "device": "cpu", "trial_status": "running", "node_id": "node-a",
    }  # fmt: skip


def run_trials(callback: StoreCallback, trial_numbers: list[int], n_epochs: int, redeliver: bool = True) -> None:
    """Each trial: start, `n_epochs` results (each delivered twice with `redeliver`), completion."""
    for number in trial_numbers:
        trial = FakeTrial(trial_id=f"t{number}", config={"key": f"key{number:04d}", "k": 12 + number % 4})
        callback.on_trial_start(0, [], trial)
        for epoch in range(1, n_epochs + 1):
            result = epoch_result(number, epoch)
            for _ in range(2 if redeliver else 1):
                callback.on_trial_result(0, [], trial, result)
        trial.last_result = {**epoch_result(number, n_epochs), "trial_status": "completed"}
        callback.on_trial_complete(0, [], trial)


def process_worker(url: str, study_id: int, trial_numbers: list[int], n_epochs: int) -> None:
    """One writer process: its own engine, its own callback."""
    store: Store = open_store(url)
    try:
        run_trials(StoreCallback(store, study_id, describe), trial_numbers, n_epochs)
    finally:
        store.close()
