"""The study file's `tracking:` section, and every tracker on one tiny real study through Ray Tune.

The study (2 trials x 2 epochs of a few-hundred-parameter RKCNN on digits, so the time is Ray's
and W&B's start-up) runs once with every tracker whose package imports: MLflow writes to a
local file store and is read back with its own client; W&B runs offline and leaves its run
files; TensorBoard's event files are read with TensorBoard's own reader.  A tracker's test is
skipped only when its package cannot be imported, and says why.
"""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path

import pytest
from raycluster import ray_cluster  # noqa: F401  (the module fixture)

from rksearch.analysis.report import study_summary
from rksearch.search import tracking
from rksearch.search.engine import StudyRun, run_study
from rksearch.search.loader import StudyError, loads

pytestmark = pytest.mark.timeout(300)

EPOCHS = 2
TINY = f"""\
name: {{name}}
data:
  dataset: digits
  batch_size: 32
  limit_train: 64
  limit_val: 64
train:
  epochs: {EPOCHS}
model:
  periods: 2
  steps: 1
  growth: 4
space:
  stages: [1, 2]
resources:
  cpu: 1
"""


def importable(module: str) -> str | None:
    """None when `module` imports, else why not."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} cannot be imported ({exc}); install it with {tracking.EXTRA}"
    return None


def needs(module: str) -> None:
    """Skip (saying why) when `module`, a tracker's package, cannot be imported."""
    why = importable(module)
    if why is not None:
        print(why)
        pytest.skip(why)


SECTIONS = {  # by the package each tracker needs: its part of the shared study's `tracking:` section
    "mlflow": "  mlflow: {{tracking_uri: '{uri}', experiment: rk}}\n",
    "wandb": "  wandb: {{project: rk, mode: offline}}\n",
    "tensorboard": "  tensorboard: true\n",
}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> tuple[Path, StudyRun]:  # noqa: F811
    """One tiny study (2 trials x EPOCHS) with every tracker whose package imports here."""
    tmp = tmp_path_factory.mktemp("tracked")
    uri = f"file://{tmp}/mlruns"
    section = "".join(text.format(uri=uri) for module, text in SECTIONS.items() if importable(module) is None)
    study, text = loads(TINY.format(name="tracked") + "tracking:\n" + section)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps a file store only when told
        result = run_study(study, text, storage_url=f"sqlite:///{tmp / 'r.db'}", storage_path=str(tmp / "ck"),
                           preflight=False, stream=io.StringIO())
    assert result.complete and result.trained == 2, result
    return tmp, result


def trial_dirs(tmp: Path) -> list[Path]:
    """The Tune trial directories of the tracked study (one per trial; see engine._TrialName)."""
    return sorted(p for p in (tmp / "ck" / "tracked").glob("run-*/*_*") if p.is_dir())


# ---- the study file -------------------------------------------------------------------------------

@pytest.mark.parametrize("section, expected", [
    ("{tensorboard: maybe}", "<study>:17: tracking.tensorboard: Input should be a valid boolean"),
    ("{neptune: {}}", "<study>:17: tracking.neptune: unknown field 'neptune'; allowed: tensorboard, mlflow, wandb"),
    ("{mlflow: {uri: x}}", "<study>:17: tracking.mlflow.uri: unknown field 'uri'"),
    ("{wandb: {mode: cloud}}",
     "<study>:17: tracking.wandb.mode: 'cloud' is not allowed; allowed: 'online', 'offline', 'disabled'"),
    ("{mlflow: {tracking_uri: 'https://me:s3cret@mlflow.example.org'}}",
     "<study>:17: tracking.mlflow.tracking_uri: holds a password"),
    ("{wandb: {project: p, api_key: abc}}", "<study>:17: tracking.wandb: api_key: not read from the study file"),
])
def test_bad_tracking_fields_are_refused_with_a_line_naming_the_field(section: str, expected: str) -> None:
    with pytest.raises(StudyError) as caught:
        loads(TINY.format(name="bad") + f"tracking: {section}\n")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(expected), caught.value.problems[0]
    assert "s3cret" not in caught.value.problems[0]


def test_a_study_without_trackers_asks_for_none() -> None:
    study, _ = loads(TINY.format(name="plain"))
    assert tracking.requested(study) == [] and tracking.callbacks(study) == []


def test_a_tracker_whose_package_is_missing_is_refused_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    study, text = loads(TINY.format(name="nomlflow") + "tracking: {mlflow: {experiment: x}}\n")
    with pytest.raises(tracking.TrackingError) as caught:
        run_study(study, text, storage_url=f"sqlite:///{tmp_path / 'r.db'}", storage_path=str(tmp_path / "ck"),
                  preflight=False, stream=io.StringIO())
    assert str(caught.value) == f"tracking.mlflow needs mlflow, not installed here: {tracking.EXTRA}"
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "ck").exists()


def test_wandb_online_without_a_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no `wandb login` either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    study, _ = loads(TINY.format(name="online") + "tracking: {wandb: {project: p, mode: online}}\n")
    with pytest.raises(tracking.TrackingError, match="mode online needs a W&B API key: set WANDB_API_KEY"):
        tracking.check(study)


# ---- each tracker on a real study -------------------------------------------------------------------

def test_mlflow_file_store_gets_one_run_per_trial_with_a_metric_per_epoch(tracked) -> None:
    needs("mlflow")
    from mlflow.tracking import MlflowClient

    tmp, _ = tracked
    client = MlflowClient(tracking_uri=f"file://{tmp}/mlruns")
    experiment = client.get_experiment_by_name("rk")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert r.data.tags["rksearch.study"] == "tracked"
        history = client.get_metric_history(r.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
        assert "test_acc" in r.data.metrics  # the last report carries the test metrics


def test_wandb_offline_writes_one_run_per_trial(tracked) -> None:
    needs("wandb")
    tmp, _ = tracked
    offline = [d for trial in trial_dirs(tmp) for d in trial.glob("wandb/offline-run-*")]
    assert len(offline) == 2, offline
    for d in offline:
        assert list(d.glob("run-*.wandb")), f"no run file in {d}"


def test_tensorboard_event_files_are_under_the_printed_path(tracked) -> None:
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, result = tracked
    summary = study_summary(f"sqlite:///{tmp / 'r.db'}", "tracked", tensorboard=result.tensorboard)
    assert summary.splitlines()[-1] == f"tensorboard --logdir {tmp / 'ck' / 'tracked'}"
    events = sorted(Path(result.tensorboard).rglob("events.out.tfevents.*"))
    assert len(events) == 2, events
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        scalars = accumulator.Scalars("ray/tune/val_acc")
        assert [s.step for s in scalars] == list(range(1, EPOCHS + 1))
