"""run_trial: learning on real data, the schedule, checkpoint/resume equality, divergence,
config validation and the runtime's choices (all on CPU, small models)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from rksearch import checkpoint
from rksearch.data import DataError
from rksearch.models import build
from rksearch.runtime import RuntimeConfig, activated, resolve
from rksearch.train import TrialConfig, TrialResult, run_trial

TINY = {"name": "ERKNet-1x1 1x1 1x1", "knobs": {"k": 4}}
SYNTHETIC = {"dataset": "synthetic", "image_size": 16, "train_size": 96, "val_size": 32, "batch_size": 16}
CPU = {"device": "cpu", "threads": 1}
REPORT_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
               "best_val_acc", "trial_status", "device"}


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
    assert all(set(r) == REPORT_KEYS for r in reports)
    assert [r["trial_status"] for r in reports] == ["running", "completed"]
    assert result.final["val_acc"] > 0.3
    assert result.best_val_acc == max(r["val_acc"] for r in reports)
    assert result.params == sum(p.numel() for p in build("ERKNet-1x1 1x1 1x1", k=12, dataset="digits").parameters())


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
    assert (rt.device.type, rt.amp_dtype, rt.channels_last) == ("cpu", None, False)
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
