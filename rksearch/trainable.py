"""The Ray Tune trainable: what a worker process runs for one trial.

Kept apart from `rksearch.engine` on purpose: Ray imports the trainable's module in every
worker process, and the engine's driver-side imports (Optuna, SQLAlchemy and the store, the
progress view) would add seconds to each worker's start for nothing a trial uses.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import ray
from ray import tune

from .checkpoint import load as load_checkpoint
from .space import PlannedTrial, Planner
from .study import Study
from .train import run_trial


@lru_cache(maxsize=4)
def planner_for(study_json: str) -> Planner:
    """The study's planner, built once per process (Tune hands every trial the same JSON)."""
    return Planner(Study.model_validate_json(study_json))


def planned_trial(study_json: str, config: dict[str, Any]) -> PlannedTrial:
    """The trial a Tune config names: its ``config["trial"]`` resolved by the study's planner."""
    spec = config["trial"]
    return planner_for(study_json).resolve(spec["assignment"], spec["seed"])


def train_planned(config: dict[str, Any], study_json: str) -> None:
    """Tune trainable: train the trial `config["trial"]` names, one `tune.report` per epoch."""
    spec = config["trial"]
    trial = planned_trial(study_json, config)
    # node_id: which Ray node ran each epoch (node_ip is the same for every node on one host)
    extra = {"trial_key": trial.key, "model_name": trial.model_name,
             "params": trial.cost.params, "flops": trial.cost.flops,
             "node_id": ray.get_runtime_context().get_node_id()}
    with tempfile.TemporaryDirectory(prefix="rksearch-trial-") as work:
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # Tune retrying this trial after a worker died
            resume_from = Path(checkpoint.to_directory(str(Path(work) / "resume")))
        elif spec.get("resume_from"):  # an earlier run of the study left this checkpoint
            resume_from = Path(spec["resume_from"])
            # A worker saves an epoch's checkpoint before the driver records that epoch, so the
            # driver that died may never have stored it (nor, for a last epoch, how the trial
            # ended): report it again (epochs are upserted, a repeat is harmless).
            tune.report({**load_checkpoint(resume_from)["metrics"], **extra})

        def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            saved = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
            tune.report({**metrics, **extra}, checkpoint=saved)

        run_trial(trial.config, report, checkpoint_dir=Path(work) / "checkpoint", resume_from=resume_from)
