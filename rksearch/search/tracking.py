"""The study's `tracking:` section as Ray Tune's own logger callbacks, on the driver.

Every tracker sees what Tune sees: one result per epoch of every trial (validation accuracy,
loss, the epoch's cost), and in a trial's last result its test metrics, which are reported
results like the others (the search never selects on them; see README "Tracking").

- ``tensorboard: true``: Ray's `TBXLoggerCallback` writes event files into each trial's
  directory under the study's checkpoint directory (Ray adds it by default too when
  tensorboardX is installed; asking for it makes that a checked promise, and the end-of-study
  summary prints ``tensorboard --logdir`` on that directory);
- ``mlflow``: `MLflowLoggerCallback`, one MLflow run per trial;
- ``wandb``: `WandbLoggerCallback`, one W&B run per trial, its API key from the environment only.

mlflow and wandb are heavy and optional (``pip install -e ".[tracking]"``): nothing here imports
them unless the study asks for them, and `check` refuses a study whose trackers cannot work
before anything runs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rksearch.errors import RksearchError
from rksearch.search.schema import Study

if TYPE_CHECKING:
    from ray.tune import Callback

EXTRA = 'pip install -e ".[tracking]"'
#: the modules each tracker needs on the driver: to write (tensorboardX comes with ray[tune]) and to view
MODULES = {"tensorboard": ("tensorboardX", "tensorboard"), "mlflow": ("mlflow",), "wandb": ("wandb",)}


class TrackingError(RksearchError, RuntimeError):
    """A tracker the study asks for cannot work here (a package missing, no W&B key)."""


def requested(study: Study) -> list[str]:
    """The trackers the study asks for, in `MODULES` order."""
    tracking = study.tracking
    wanted = {"tensorboard": tracking.tensorboard, "mlflow": tracking.mlflow is not None,
              "wandb": tracking.wandb is not None and tracking.wandb.mode != "disabled"}
    return [name for name in MODULES if wanted[name]]


def check(study: Study) -> None:
    """Refuse, in one line, a study whose trackers would fail only once trials run."""
    missing = [f"tracking.{name} needs {module}" for name in requested(study) for module in MODULES[name]
               if not _importable(module)]
    if missing:
        raise TrackingError(f"{'; '.join(missing)}, not installed here: {EXTRA}")
    if study.tracking.mlflow is not None:
        _open_local_mlflow(study.tracking.mlflow.tracking_uri)
    wandb = study.tracking.wandb
    if wandb is not None and wandb.mode == "online" and not _wandb_logged_in():
        raise TrackingError("tracking.wandb: mode online needs a W&B API key: set WANDB_API_KEY in the environment "
                            "(or run `wandb login`), or use mode: offline")


def callbacks(study: Study) -> list[Callback]:
    """Ray Tune logger callbacks for the study's trackers (none: an empty list, nothing imported)."""
    made: list[Callback] = []
    names = requested(study)
    if "tensorboard" in names:
        from ray.tune.logger import TBXLoggerCallback

        made.append(TBXLoggerCallback())
    if "mlflow" in names:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        mlflow = study.tracking.mlflow
        assert mlflow is not None
        made.append(MLflowLoggerCallback(tracking_uri=mlflow.tracking_uri,
                                         experiment_name=mlflow.experiment or study.name,
                                         tags={"rksearch.study": study.name}))
    if "wandb" in names:
        wandb = study.tracking.wandb
        assert wandb is not None
        made.append(_wandb_callback()(project=wandb.project or study.name, group=study.name, mode=wandb.mode))
    return made


def _importable(module: str) -> bool:
    """Imported, not just found: a package whose own dependencies are broken fails here, not mid-study."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _open_local_mlflow(uri: str | None) -> None:
    """Open a local MLflow store (a file store, SQLite, MLflow's default) now, so that one MLflow
    refuses (MLflow 3 keeps a file store only with MLFLOW_ALLOW_FILE_STORE=true) stops the study
    before it begins, not when its first trial starts.  A tracking server is not contacted here."""
    if uri is not None and urlsplit(uri).scheme not in ("", "file", "sqlite"):
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001  (MlflowException, OSError, SQLAlchemy's: the store is unusable)
        raise TrackingError(f"tracking.mlflow.tracking_uri: MLflow cannot use {uri or 'its default store'}: "
                            f"{' '.join(str(exc).split())}") from None


def _wandb_logged_in() -> bool:
    """A W&B key in the environment or from `wandb login`; never prompts, never goes online."""
    import wandb

    return bool(os.environ.get("WANDB_API_KEY")) or wandb.login(prompt=False, verify=False)


@functools.cache
def _wandb_callback() -> type:
    """`WandbLoggerCallback` whose study-file `mode` also governs its API-key check: Ray's
    `setup` reads the mode from WANDB_MODE alone, so an offline study would be asked for a key
    it never uses.  Made on first use, so that a study without W&B never imports wandb."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    class Wandb(WandbLoggerCallback):
        def setup(self, *args: Any, **kwargs: Any) -> None:
            with _environ("WANDB_MODE", self.kwargs["mode"]):
                super().setup(*args, **kwargs)

    return Wandb


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` for a block only: the driver's environment outlives the study."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
