"""run_trial: learning on real data, the schedule, checkpoint/resume equality, divergence,
config validation and the runtime's choices (all on CPU, small models)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from rksearch.models import build
from rksearch.training import checkpoint
from rksearch.training.config import TrialConfig
from rksearch.training.data import DataError
from rksearch.training.loop import TrialResult, run_trial
from rksearch.training.runtime import RuntimeConfig, activated, resolve

TINY = {"name": "ERKNet-1x1 1x1 1x1", "knobs": {"k": 4}}
SYNTHETIC = {"dataset": "synthetic", "image_size": 16, "train_size": 96, "val_size": 32, "batch_size": 16}
CPU = {"device": "cpu", "threads": 1}
REPORT_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
               "best_val_acc", "best_epoch", "trial_status", "device", "train_images"}
#: only the last report of a completed trial carries the test set's numbers
TEST_KEYS = {"test_acc", "test_acc_final"}


def _config(**sections: Any) -> dict[str, Any]:
    return {"model": TINY, "data": SYNTHETIC, "runtime": CPU, **sections}


def test_two_digits_epochs_beat_chance_clearly() -> None:
    """10 classes: chance is 0.1; two epochs of a small ERKNet on the 8x8 digits reach well above."""
    reports: list[dict[str, Any]] = []
    result = run_trial({
        "model": {"name": "ERKNet-1x1 1x1 1x1", "knobs": {"k": 12}},
        "data": {"dataset": "digits", "batch_size": 16},
        "optim": {"epochs": 2, "lr": 0.05, "schedule": "cosine"},
        "runtime": CPU,
    }, report=lambda metrics, _: reports.append(metrics))
    assert result.status == "completed" and result.error is None and result.epochs == 2
    assert [r["epoch"] for r in reports] == [1, 2]
    assert set(reports[0]) == REPORT_KEYS and set(reports[1]) == REPORT_KEYS | TEST_KEYS
    assert [r["trial_status"] for r in reports] == ["running", "completed"]
    # what an epoch trained on (the study's compute counts it): digits' 1797 less its test set and the holdout
    assert reports[0]["train_images"] == reports[1]["train_images"] < 1797 * 0.8
    assert result.final["val_acc"] > 0.3
    assert result.best_val_acc == max(r["val_acc"] for r in reports)
    assert result.params == sum(p.numel() for p in build("ERKNet-1x1 1x1 1x1", k=12, dataset="digits").parameters())


class _Recorded:
    """A data source that logs each pass over it (which split, in what order)."""

    def __init__(self, source: Any, split: str, log: list[tuple[str, int]]) -> None:
        self.source, self.split, self.log, self.num_samples = source, split, log, source.num_samples

    def batches(self, epoch: int) -> Any:
        self.log.append((self.split, epoch))
        return self.source.batches(epoch)


def test_the_test_set_is_read_only_after_the_last_epoch_and_selection_never_sees_it(monkeypatch) -> None:
    """The protocol, by instrumenting the data source: validation selects, test reports once."""
    from rksearch.search.schedulers import blind
    from rksearch.training import loop as train_module

    events: list[tuple[str, int]] = []
    real_load = train_module.load_data

    def instrumented(cfg: Any, seed: int, device: Any) -> Any:
        data = real_load(cfg, seed=seed, device=device)
        for split in ("train", "val", "test"):
            setattr(data, split, _Recorded(getattr(data, split), split, events))
        return data

    monkeypatch.setattr(train_module, "load_data", instrumented)
    reports: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], _: Path | None) -> None:
        events.append(("report", metrics["epoch"]))
        reports.append(metrics)

    result = run_trial(_config(data={"dataset": "digits", "limit_train": 200, "holdout_fraction": 0.2},
                               optim={"epochs": 3, "lr": 0.05}), report=report)
    assert result.status == "completed"
    test_reads = [i for i, (split, _) in enumerate(events) if split == "test"]
    last_val = max(i for i, (split, _) in enumerate(events) if split == "val")
    # once on the best epoch's weights and once on the final ones (once when they are the same),
    # after the last validation pass and before the one report that carries them
    assert len(test_reads) == (1 if result.best_epoch == 3 else 2)
    assert all(last_val < i < events.index(("report", 3)) for i in test_reads)
    assert [split for split, _ in events].count("val") == 3
    assert all(not TEST_KEYS & set(r) for r in reports[:-1]) and TEST_KEYS <= set(reports[-1])
    # what the searcher and the scheduler are handed of that last report holds nothing of the test set
    assert not [k for k in blind(reports[-1]) if k.startswith("test")]
    assert result.best_val_acc == max(r["val_acc"] for r in reports)
    assert result.best_epoch == max(r["epoch"] for r in reports if r["val_acc"] == result.best_val_acc)


def test_test_accuracy_is_measured_on_the_best_epochs_weights(tmp_path: Path) -> None:
    """test_acc is the best epoch's model on the test set: reloading that epoch's weights gives it."""
    from rksearch.training.data import DataConfig, load
    from rksearch.training.loop import build_model, evaluate

    config = _config(data={"dataset": "digits", "limit_train": 300}, optim={"epochs": 4, "lr": 0.3})
    checkpoints: dict[int, dict[str, torch.Tensor]] = {}

    def keep(metrics: dict[str, Any], directory: Path | None) -> None:
        checkpoints[metrics["epoch"]] = checkpoint.load(directory)["model"]

    result = run_trial(config, report=keep, checkpoint_dir=tmp_path)
    cfg = TrialConfig.model_validate(config)
    data = load(DataConfig.model_validate(config["data"]), seed=0)
    model = build_model(cfg, data)
    runtime = resolve(cfg.runtime)
    for epoch, expected in ((result.best_epoch, result.test_acc), (4, result.test_acc_final)):
        model.load_state_dict(checkpoints[epoch])
        assert evaluate(model, data.test, runtime)[1] == expected
    saved = checkpoint.load(tmp_path)
    assert saved["best_epoch"] == result.best_epoch
    if result.best_epoch != 4:  # the last checkpoint carries the best epoch's weights too
        assert all(torch.equal(saved["best_model"][k], checkpoints[result.best_epoch][k]) for k in saved["model"])


def test_step_schedule_divides_lr_at_the_milestones() -> None:
    reports: list[dict[str, Any]] = []
    run_trial(_config(optim={"epochs": 4, "lr": 0.2, "milestones": [0.5, 0.75], "gamma": 0.1}),
              report=lambda metrics, _: reports.append(metrics))
    assert [r["lr"] for r in reports] == pytest.approx([0.2, 0.2, 0.02, 0.002])


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(directory)["model"]


def test_resume_after_one_epoch_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """Dropout, augmentation and shuffling all draw random numbers: resuming must replay them."""
    config = _config(
        model={"name": "ERKNet-1x1 1x1 1x1", "knobs": {"k": 4, "dropout": 0.2}},
        data={**SYNTHETIC, "augment": "flip-crop"},
        optim={"epochs": 3, "lr": 0.05, "milestones": [0.67]},
        runtime={**CPU, "deterministic": True},
        seed=7,
    )
    straight = run_trial(config, checkpoint_dir=tmp_path / "straight")

    class Killed(Exception):
        """Stands in for the process dying right after epoch 1 was reported."""

    seen: list[tuple[int, int]] = []

    def killed_after_first(metrics: dict[str, Any], directory: Path | None) -> None:
        assert directory is not None  # this epoch's checkpoint is on disk before the report
        seen.append((metrics["epoch"], checkpoint.load(directory)["epoch"]))
        raise Killed

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Killed):
        run_trial(config, report=killed_after_first, checkpoint_dir=interrupted)
    assert seen == [(1, 1)]
    resumed_reports: list[int] = []
    resumed = run_trial(config, report=lambda m, _: resumed_reports.append(m["epoch"]),
                        checkpoint_dir=tmp_path / "resumed", resume_from=interrupted)

    assert resumed_reports == [2, 3]
    assert resumed.status == straight.status == "completed"
    timing = {"seconds", "images_per_s"}
    assert {k: v for k, v in resumed.final.items() if k not in timing} == \
           {k: v for k, v in straight.final.items() if k not in timing}
    straight_w, resumed_w = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight_w.keys() == resumed_w.keys()
    assert all(torch.equal(straight_w[k], resumed_w[k]) for k in straight_w)
    # and the weights did change over training (the comparison above is not between untouched inits)
    assert not torch.equal(_weights(interrupted)["head.classifier.weight"], straight_w["head.classifier.weight"])


def test_a_diverging_trial_fails_once_with_the_reason_and_stops() -> None:
    reports: list[tuple[dict[str, Any], Path | None]] = []
    result = run_trial(_config(optim={"epochs": 5, "lr": 1e6}), report=lambda m, d: reports.append((m, d)))
    assert result.status == "failed" and result.error is not None and "nan" in result.error.lower()
    assert len(reports) == 1
    metrics, directory = reports[0]
    assert metrics["trial_status"] == "failed" and metrics["error"] == result.error
    assert metrics["epoch"] == 1 and math.isnan(metrics["train_loss"]) and directory is None
    assert result.epochs == 0 and isinstance(result, TrialResult)


def test_missing_data_raises_a_data_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "absent")):
        run_trial(_config(data={"dataset": "cifar10", "root": str(tmp_path / "absent")}))


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TrialConfig.model_validate({**_config(), "epochs": 3})
    with pytest.raises(ValidationError, match="milestones"):
        TrialConfig.model_validate(_config(optim={"milestones": [0.75, 0.5]}))
    with pytest.raises(ValidationError, match="dataset"):
        TrialConfig.model_validate(_config(model={"name": "ERKNet-1x1 1x1 1x1", "knobs": {"dataset": "svhn"}}))
    cfg = TrialConfig.model_validate({"model": {"name": "ERKNet-6x1 6x1 6x1"}})
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.1, 0.9, True, 1e-4)
    assert cfg.optim.milestone_epochs() == [150, 225] and cfg.data.augment == "none"


def test_runtime_defaults_on_cpu_and_restores_global_settings() -> None:
    rt = resolve(RuntimeConfig(device="cpu", threads=1))
    assert (rt.device.type, rt.amp_dtype, rt.channels_last) == ("cpu", None, True)  # faster on CPU too
    assert not resolve(RuntimeConfig(device="cpu", channels_last=False)).channels_last
    with pytest.raises(RuntimeError, match="fp16"):
        resolve(RuntimeConfig(device="cpu", amp="fp16"))
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    with activated(resolve(RuntimeConfig(device="cpu", threads=2, deterministic=True))):
        assert torch.get_num_threads() == 2 and torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_bf16_autocast_on_cpu_trains() -> None:
    result = run_trial(_config(optim={"epochs": 1, "lr": 0.05}, runtime={**CPU, "amp": "bf16", "channels_last": True}))
    assert result.status == "completed" and math.isfinite(result.final["train_loss"])
    assert "bfloat16" in result.device and "channels_last" in result.device
