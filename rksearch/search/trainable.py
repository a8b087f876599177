"""The Ray Tune trainable: what a worker process runs for one trial.

Kept apart from `rksearch.search.engine` on purpose: Ray imports the trainable's module in every
worker process, and the engine's driver-side imports (Optuna, SQLAlchemy and the store, the
progress view) would add seconds to each worker's start for nothing a trial uses.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from rksearch.search.planner import planned_trial
from rksearch.training.checkpoint import first_loadable
from rksearch.training.environment import trial_environment
from rksearch.training.loop import run_trial

log = logging.getLogger(__name__)


def train_planned(config: dict[str, Any], study_json: str) -> None:
    """Tune trainable: train the trial `config["trial"]` names, one `tune.report` per epoch.

    It goes on from the newest checkpoint that loads: on a Tune retry the ones Tune kept in this
    run, then those earlier runs left (``resume_candidates``, newest first, chosen by the driver);
    with none, from epoch 0.  An unreadable one is passed over with a warning saying why and
    what the trial resumes from instead, so a damaged file costs epochs, never the trial.
    """
    spec = config["trial"]
    trial = planned_trial(study_json, config)
    # node_id: which Ray node ran each epoch (node_ip is the same for every node on one host)
    node_id = ray.get_runtime_context().get_node_id()
    extra = {"trial_key": trial.key, "model_name": trial.model_name,
             "params": trial.cost.params, "flops": trial.cost.flops, "node_id": node_id}
    # what this run of the trial computes on, sent once with its first report
    first = {"environment": trial_environment(trial.config["runtime"].get("device", "cpu"), node_id)}
    # Tune retrying this trial after a worker died: the checkpoints it kept in this run come first
    retry = tune.get_checkpoint()
    this_run = _kept_by_tune(Path(retry.path)) if retry is not None else []
    earlier = [Path(d) for d in spec.get("resume_candidates", [])]  # left by earlier runs, newest first
    found = first_loadable(this_run + earlier)
    note = found.note()
    if note:
        log.warning("trial %s (%s): %s", trial.model_name, trial.key[:8], note)
    resume_from = found.directory
    if found.state is not None and resume_from in earlier:
        # A worker saves an epoch's checkpoint before the driver records that epoch, so the
        # driver that died may never have stored it (nor, for a last epoch, how the trial
        # ended, nor where its checkpoint is): report it again, with its checkpoint, which Tune
        # keeps in this run like any other (epochs are upserted, a repeat is harmless).
        tune.report({**found.state["metrics"], **extra, **first},
                    checkpoint=tune.Checkpoint.from_directory(str(resume_from)))
        first = {}
    del found  # run_trial loads the checkpoint itself; the model's tensors need not stay twice
    with tempfile.TemporaryDirectory(prefix="rksearch-trial-") as work:
        def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            nonlocal first
            saved = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
            tune.report({**metrics, **extra, **first}, checkpoint=saved)
            first = {}

        # a staging directory: Tune copies each reported checkpoint into the trial's directory
        run_trial(trial.config, report, checkpoint_dir=Path(work) / "checkpoint", resume_from=resume_from,
                  durable=False)


def _kept_by_tune(newest: Path) -> list[Path]:
    """`newest` (the checkpoint `tune.get_checkpoint` hands a retried trial) and the older ones
    Tune still keeps beside it in the trial's directory, newest first: when the newest does not
    load, the retry falls back to the next instead of failing on the same file again.

    The study's storage is a local (or shared) directory (`engine.run_study`), so the
    checkpoints are read where Tune keeps them.
    """
    older = sorted((d for d in newest.parent.glob("checkpoint_*") if d.name < newest.name), reverse=True)
    return [newest, *older]
