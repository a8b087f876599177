"""A corrupt or truncated checkpoint costs a trial some epochs, never the trial (issue 12).

Every fault is real: files cut to half their size or overwritten on disk, a save that raises
half-way, a driver killed with SIGKILL in the middle of a trial.  The end-to-end tests run the
real CLI in its own session and Ray (as tests/test_engine.py's resume test does), damage the
checkpoints the killed run left, and check that ``--resume`` says what it resumes from in one
line and ends with the trial completed, every epoch stored once.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
import time
import types
from pathlib import Path

import driver
import pytest
import sqlalchemy as sa
import torch
from ray import tune

from rksearch.search import trainable
from rksearch.search.loader import loads
from rksearch.store.schema import epochs, studies, trials
from rksearch.training import checkpoint

pytestmark = pytest.mark.timeout(300)

EPOCHS = 8  # a fraction of a second each: enough of them that a kill after the second lands mid-trial
STUDY = f"""\
name: {{name}}
data:
  dataset: digits
  batch_size: 8
  limit_train: 64
  limit_val: 64
train:
  epochs: {EPOCHS}
model:
  periods: 2
  steps: 1
  stages: 1
  growth: 4
search:
  max_concurrent: 1
resources:
  cpu: 1
seeds: [0]
"""
REPO = Path(__file__).resolve().parents[1]


def truncate(path: Path) -> None:
    """Cut `path` to half its size, as a write cut short by a kill or a full disk leaves it."""
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


def a_state(epoch: int) -> dict:
    """A checkpoint's content in the shape `train._Trainer.state` gives it."""
    return {"epoch": epoch, "best_val_acc": 0.5, "best_epoch": epoch, "best_model": None,
            "metrics": {"epoch": epoch}, "model": {"w": torch.randn(64, 64)},
            "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": checkpoint.rng_state()}


# ---- checkpoint.py ---------------------------------------------------------------------------

def test_save_fsyncs_file_and_directory_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd)))
    checkpoint.save(tmp_path, a_state(1))
    checkpoint.save(tmp_path, a_state(2))
    assert synced == [False, True] * 2  # each time the file, then (after the rename) its directory
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_NAME]
    assert checkpoint.load(tmp_path)["epoch"] == 2


def test_a_staging_save_skips_the_fsyncs_and_is_still_whole(tmp_path: Path, monkeypatch) -> None:
    """What a Tune trial writes for Tune to copy (`durable=False`): no fsync, same atomic file."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    checkpoint.save(tmp_path, a_state(1), durable=False)
    checkpoint.save(tmp_path, a_state(2), durable=False)
    assert synced == []
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_NAME]
    assert checkpoint.load(tmp_path)["epoch"] == 2


def test_a_save_that_fails_half_way_keeps_the_old_checkpoint_and_no_temporary_file(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, a_state(1))
    with pytest.raises(TypeError, match="cannot pickle"):  # raised with the temporary file open
        checkpoint.save(tmp_path, {**a_state(2), "metrics": {"epoch": 2, "lock": threading.Lock()}})
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_NAME]
    assert checkpoint.load(tmp_path)["epoch"] == 1


def _flip_a_byte_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (truncate, "truncated: "),
    (lambda p: p.write_bytes(b"not a checkpoint\n" * 64), "not a zip archive"),
    (lambda p: p.write_bytes(b""), "empty: 0 bytes"),
    (_flip_a_byte_in_the_middle, "corrupt: CRC mismatch"),  # torch.load alone takes this one
    (lambda p: torch.save({"format": 99, **a_state(1)}, p), f"wrong format: 99, expected {checkpoint.FORMAT}"),
    (lambda p: torch.save({k: v for k, v in {"format": checkpoint.FORMAT, **a_state(1)}.items() if k != "model"}, p),
     "missing keys: model"),
])
def test_a_damaged_checkpoint_is_unreadable_with_its_reason(tmp_path: Path, damage, reason: str) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    checkpoint.save(good, a_state(1))
    checkpoint.save(bad, a_state(2))
    damage(bad / checkpoint.CHECKPOINT_NAME)
    assert checkpoint.load(good)["epoch"] == 1
    with pytest.raises(checkpoint.UnreadableCheckpoint) as caught:
        checkpoint.load(bad)
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert str(bad / checkpoint.CHECKPOINT_NAME) in str(caught.value)


def test_first_loadable_takes_the_newest_that_loads_and_says_so_in_one_line(tmp_path: Path) -> None:
    dirs = [tmp_path / f"checkpoint_00000{i}" for i in (3, 2, 1)]  # newest first
    for i, directory in zip((3, 2, 1), dirs):
        checkpoint.save(directory, a_state(i))
    assert checkpoint.first_loadable(dirs).note() is None  # the newest loads: nothing to say
    truncate(dirs[0] / checkpoint.CHECKPOINT_NAME)
    found = checkpoint.first_loadable(dirs)
    assert (found.directory, found.state["epoch"]) == (dirs[1], 2)
    note = found.note()
    assert "\n" not in note and f"{dirs[0] / checkpoint.CHECKPOINT_NAME} is unreadable (truncated: " in note
    assert note.endswith(f"; resuming from epoch 2 ({dirs[1]})")
    for directory in dirs[1:]:
        truncate(directory / checkpoint.CHECKPOINT_NAME)
    nothing = checkpoint.first_loadable(dirs)
    assert (nothing.directory, nothing.state, len(nothing.rejected)) == (None, None, 3)
    assert nothing.note().endswith("; no readable checkpoint, restarting from epoch 0")


# ---- the worker: a Tune retry handed an unreadable checkpoint ----------------------------------

class _WorkerDied(Exception):
    pass


def test_a_tune_retry_handed_an_unreadable_checkpoint_falls_back_to_the_one_before(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """`train_planned` as Tune runs it, Tune's part played here: every reported checkpoint is
    copied to ``trial/checkpoint_00000N`` (Tune's layout); the first attempt dies after epoch 3,
    its newest checkpoint is truncated, and the retry must resume from epoch 2, not fail."""
    study, _ = loads(STUDY.format(name="retry"), overrides=["train.epochs=4"])
    config = {"trial": {"assignment": {}, "seed": 0}}
    trial_dir, reports = tmp_path / "trial", []

    def report(metrics: dict, checkpoint: tune.Checkpoint | None = None) -> None:
        reports.append(metrics)
        if checkpoint is not None:
            index = len(list(trial_dir.glob("checkpoint_*"))) + 1  # Tune's numbering goes on across retries
            shutil.copytree(checkpoint.path, trial_dir / f"checkpoint_{index:06d}")
        if len(reports) == 3 and attempt == 1:
            raise _WorkerDied

    monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: types.SimpleNamespace(get_node_id=str))
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    attempt = 1
    with pytest.raises(_WorkerDied):
        trainable.train_planned(config, study.model_dump_json())
    first = {m["epoch"]: m for m in reports}
    newest = trial_dir / "checkpoint_000003"
    truncate(newest / checkpoint.CHECKPOINT_NAME)

    attempt, reports[:] = 2, []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint(str(newest)))
    trainable.train_planned(config, study.model_dump_json())
    assert [m["epoch"] for m in reports] == [3, 4] and reports[-1]["trial_status"] == "completed"
    assert reports[0]["val_loss"] == first[3]["val_loss"]  # epoch 3 again, exactly as the first time


# ---- end to end: a real driver killed mid-trial, its checkpoints damaged, --resume -------------------

def _session(sid: int) -> list[int]:
    """The live (not zombie) processes of session `sid`."""
    alive = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(stat_file.parent.name))
    return alive


def kill_session(sid: int) -> None:
    """SIGKILL every process the driver's session holds, at once, and wait until they are gone.

    Killing the driver's process group is not enough: Ray's workers sit in process groups of
    their own and keep training (and writing checkpoints) for a second or so until they notice
    the raylet is gone, which would change the files after the test has damaged them.
    """
    deadline = time.monotonic() + 30
    while pids := _session(sid):
        assert time.monotonic() < deadline, f"processes {pids} of the killed driver's session live on"
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _db_state(db: Path) -> tuple[str | None, int]:
    """(status, epochs stored) of the study's one trial; (None, 0) before there is one."""
    if not db.exists():
        return None, 0
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            status = conn.execute(sa.select(trials.c.status)).scalar_one_or_none()
            stored = conn.execute(sa.select(sa.func.count()).select_from(epochs)).scalar_one()
            return status, stored
    except sa.exc.OperationalError:  # tables not created yet, or briefly locked
        return None, 0
    finally:
        engine.dispose()


def _rows(db: Path, name: str) -> tuple[list[dict], list[dict]]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            sid = conn.execute(sa.select(studies.c.id).where(studies.c.name == name)).scalar_one()
            t = [r._asdict() for r in conn.execute(sa.select(trials).where(trials.c.study_id == sid))]
            e = [r._asdict() for r in conn.execute(sa.select(epochs).join(trials).where(trials.c.study_id == sid))]
    finally:
        engine.dispose()
    return t, e


def _checkpoints(storage: Path) -> list[Path]:
    """The trial's checkpoint directories holding a checkpoint.pt, newest first (one run)."""
    return sorted((p.parent for p in storage.glob("run-*/*_*/checkpoint_*/checkpoint.pt")), reverse=True)


@pytest.mark.parametrize("damaged", ["newest", "all"])
def test_resume_after_a_kill_survives_truncated_checkpoints(tmp_path: Path, damaged: str) -> None:
    name = f"cut-{damaged}"
    path, db, storage = tmp_path / "study.yaml", tmp_path / "study.db", tmp_path / "ck"
    path.write_text(STUDY.format(name=name))
    cmd = driver.command(path, db, storage)
    deadline = time.monotonic() + 120

    def two_checkpointed_epochs() -> bool:
        assert time.monotonic() < deadline, "the trial did not reach two checkpointed epochs in time"
        return len(_checkpoints(storage / name)) >= 2 and _db_state(db)[1] >= 2

    # its own session, so that kill_session ends the driver and its Ray, and nothing else
    driver.stop_when(cmd, tmp_path, ready=two_checkpointed_epochs,
                     stop=lambda proc: kill_session(proc.pid))  # the session's id is the driver's pid
    status, stored = _db_state(db)
    assert status == "running" and stored < EPOCHS, "the kill came too late to test a resume"

    kept = _checkpoints(storage / name)
    cut = kept if damaged == "all" else kept[:1]
    for directory in cut:
        truncate(directory / checkpoint.CHECKPOINT_NAME)
    again = driver.run(cmd + ["--resume"], tmp_path, timeout=150)
    assert again.returncode == 0, again.stderr[-3000:]

    trial_rows, epoch_rows = _rows(db, name)
    assert [(t["status"], t["epochs_done"], t["error"]) for t in trial_rows] == [("completed", EPOCHS, None)]
    assert sorted(e["epoch"] for e in epoch_rows) == list(range(1, EPOCHS + 1))
    assert not list(storage.glob(f"{name}/run-*/*/error.txt")), "a trial attempt failed"
    [line] = [s for s in again.stdout.splitlines() if "is unreadable" in s]
    assert line.startswith(f"[{name}] trial ") and all(f"{d / checkpoint.CHECKPOINT_NAME} is unreadable (truncated: "
                                                        in line for d in cut)
    if damaged == "all":
        assert line.endswith("; no readable checkpoint, restarting from epoch 0")
    else:
        epoch = torch.load(kept[1] / checkpoint.CHECKPOINT_NAME, weights_only=True)["epoch"]
        assert line.endswith(f"; resuming from epoch {epoch} ({kept[1]})")
