"""Replay (`rksearch.search.replay`): one tiny study is recorded once for the module (six
trials of four epochs on 256 digits images, in one Ray started here and shared by every
replay), then replayed as a grid with points it lacks, under ASHA, and by TPE twice with one
seed, random and multi-objective.  Each replay goes through `rksearch.run_study(replay=...)`,
the path the command line takes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray
import sqlalchemy as sa

import rksearch
from rksearch import results, run
from rksearch.api import load_study, planned_trials
from rksearch.search.replay import NOT_RECORDED, NoRecording
from rksearch.store import db
from rksearch.store.schema import epochs as epochs_table
from rksearch.store.schema import studies as studies_table
from rksearch.store.schema import trials as trials_table

pytestmark = pytest.mark.timeout(900)

EPOCHS = 4

STUDY = """\
name: rec
data: {{dataset: digits, batch_size: 32, limit_train: 256, limit_val: 128}}
train: {{epochs: {epochs}, lr: 0.1, schedule: cosine}}
model: {{periods: 1, steps: 1}}
space: {{stages: [1, 2, 3], growth: [4, 6]}}
resources: {{cpu: 1}}
storage: {{checkpoints: {checkpoints}}}
seeds: [0]
"""


class Recorded:
    """The recorded study: its database, study file and trials (completed, by trial key)."""

    def __init__(self, url: str, path: Path, trials: pd.DataFrame, epochs: pd.DataFrame) -> None:
        self.url, self.path, self.trials, self.epochs = url, path, trials.set_index("trial_key"), epochs

    def replay(self, name: str, *overrides: str) -> pd.DataFrame:
        """Replay the study file under `name` with `overrides`; every trial of the replay, by id."""
        rksearch.run_study(self.path, [f"name={name}", *overrides], storage=self.url, preflight=False, replay="rec")
        return results.load(self.url, name, status=None).sort_values("trial_id")

    def same_as_recorded(self, replayed: pd.DataFrame) -> None:
        """Every completed replayed trial is the recorded trial of its key, exactly."""
        done = replayed[replayed["status"] == "completed"].set_index("trial_key")
        assert len(done) > 0
        columns = ["best_val_acc", "final_val_acc", "best_epoch", "test_acc", "test_acc_final", "epochs", "flops"]
        pd.testing.assert_frame_equal(done[columns], self.trials.loc[done.index, columns])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    root = tmp_path_factory.mktemp("replay")
    path = root / "study.yaml"
    path.write_text(STUDY.format(epochs=EPOCHS, checkpoints=root / "runs"))
    url = f"sqlite:///{root / 'replay.db'}"
    # one Ray for every study here, always a new local one (never another job's cluster on this machine)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        trials = rksearch.run_study(path, storage=url, preflight=False)
        assert len(trials) == 6 and set(trials["epochs"]) == {EPOCHS}
        yield Recorded(url, path, trials, results.load_epochs(url, "rec"))
    finally:
        ray.shutdown()


def _study_row(url: str, name: str) -> pd.Series:
    frame = results.studies(url)
    return frame[frame["study"] == name].iloc[0]


def test_a_replayed_grid_reproduces_every_recorded_trial_and_skips_what_the_recording_lacks(
        recorded: Recorded) -> None:
    # reuse would link the recorded trials themselves (same keys, same code): a replay ignores it
    replayed = recorded.replay("grid", "space.growth=[4, 6, 8]", "reuse=any")
    lacking = replayed[replayed["growth"] == 8]
    assert len(lacking) == 3 and set(lacking["status"]) == {"skipped"} and set(lacking["error"]) == {NOT_RECORDED}
    assert set(replayed.loc[replayed["growth"] != 8, "status"]) == {"completed"}
    recorded.same_as_recorded(replayed)
    # every epoch's metrics, not only the summaries
    columns = ["trial_key", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    epochs = results.load_epochs(recorded.url, "grid")[columns].sort_values(["trial_key", "epoch"], ignore_index=True)
    pd.testing.assert_frame_equal(epochs, recorded.epochs[columns].sort_values(["trial_key", "epoch"],
                                                                               ignore_index=True))
    # marked as a replay, with the recording's (simulated) compute
    row, original = _study_row(recorded.url, "grid"), _study_row(recorded.url, "rec")
    assert row["replay_of"] == "rec" and pd.isna(original["replay_of"])
    for column in ("epochs_trained", "train_flops", "cpu_hours", "gpu_hours"):
        assert row[column] == pytest.approx(original[column]), column
    assert row["epochs_trained"] == 6 * EPOCHS and original["train_flops"] > 0 and original["cpu_hours"] > 0


def test_asha_prunes_under_replay_and_the_study_counts_what_it_saved(recorded: Recorded) -> None:
    replayed = recorded.replay("asha", "scheduler.type=asha", "scheduler.grace_period=1",
                               "scheduler.reduction_factor=2", "search.max_concurrent=1")
    pruned = replayed[replayed["status"] == "pruned"]
    assert len(pruned) >= 1 and (pruned["epochs"] < EPOCHS).all()
    recorded.same_as_recorded(replayed)
    # a pruned trial's epochs are the recording's first ones
    replay_epochs = results.load_epochs(recorded.url, "asha").set_index(["trial_key", "epoch"])
    recorded_epochs = recorded.epochs.set_index(["trial_key", "epoch"])
    assert (replay_epochs["val_acc"] == recorded_epochs.loc[replay_epochs.index, "val_acc"]).all()
    # the compute: what ran, and what pruning saved against training every trial to the end
    engine = db.connect(recorded.url, create=False)
    with engine.connect() as conn:
        images = dict(conn.execute(sa.select(trials_table.c.trial_key, trials_table.c.train_images)
                                   .join(studies_table).where(studies_table.c.name == "asha")).all())
    engine.dispose()
    assert set(images.values()) == {256}  # what the recorded workers trained on, carried through
    row = _study_row(recorded.url, "asha")
    ran = replayed[replayed["epochs"] > 0]
    assert row["epochs_trained"] == ran["epochs"].sum() < 6 * EPOCHS
    assert row["epochs_saved"] == (EPOCHS - pruned["epochs"]).sum()
    assert row["flops_saved"] == pytest.approx(float(((EPOCHS - pruned["epochs"]) * 256 * 3 * pruned["flops"]).sum()))
    assert row["train_flops"] == pytest.approx(float((ran["epochs"] * 256 * 3 * ran["flops"]).sum()))


def test_optuna_and_random_replays_follow_the_recording_and_a_fixed_seed_repeats_tpe(recorded: Recorded) -> None:
    tpe = ["search.algorithm=tpe", "search.num_samples=4", "search.seed=3", "search.max_concurrent=1"]
    first, second = recorded.replay("tpe-a", *tpe), recorded.replay("tpe-b", *tpe)
    assert list(first["trial_key"]) == list(second["trial_key"]) and len(first) == 4
    assert list(first["status"]) == list(second["status"])
    recorded.same_as_recorded(first)
    for algorithm in ("random", "multi_objective"):
        replayed = recorded.replay(algorithm, f"search.algorithm={algorithm}", "search.num_samples=3")
        recorded.same_as_recorded(replayed)


def test_a_replay_names_another_recorded_study(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NoRecording, match="no study named 'nothing'"):
        rksearch.run_study(recorded.path, ["name=x"], storage=recorded.url, preflight=False, replay="nothing")
    with pytest.raises(NoRecording, match="cannot replay itself"):
        rksearch.run_study(recorded.path, storage=recorded.url, preflight=False, replay="rec")
    assert "x" not in set(results.studies(recorded.url)["study"])  # refused before the study began
    # so the command line names no command to continue it: there is nothing to continue
    assert run.main([str(recorded.path), "--set", "name=x", "--storage", recorded.url, "--replay", "nothing"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --replay nothing: no study named") and "continue with" not in line


def test_a_replay_that_finds_nothing_recorded_says_why_it_may_be(recorded: Recorded,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    replayed = recorded.replay("other-epochs", "train.epochs=3")  # the epochs are in every key
    assert set(replayed["error"]) == {NOT_RECORDED} and len(replayed) == len(recorded.trials)
    assert "warning: none of the 6 points this study asked for is in the recording 'rec', which holds 6 " \
           "completed trials under other keys" in capsys.readouterr().out


def test_a_study_recorded_on_a_gpu_replays_on_a_machine_without_one(recorded: Recorded) -> None:
    """The recording copied as a GPU study would have recorded it (the keys a study with
    ``resources.gpu: 1`` plans: CUDA, bf16); this Ray has no GPU, and the replay, preflight
    included, neither refuses nor waits for one: a replayed trial reserves one CPU."""
    gpu_keys = {(str(t.assignment), t.seed): t.key
                for t in planned_trials(load_study(recorded.path, ["resources.gpu=1"])[0])}
    engine = db.create_engine(recorded.url)
    with engine.begin() as conn:
        [source] = conn.execute(sa.select(studies_table).where(studies_table.c.name == "rec")).mappings().all()
        target = conn.execute(studies_table.insert().values(
            {**source, "id": None, "name": "rec-gpu"})).inserted_primary_key[0]
        for row in conn.execute(sa.select(trials_table).where(trials_table.c.study_id == source["id"])).mappings():
            key = gpu_keys[(str(row["dims"]), row["seed"])]
            copied = conn.execute(trials_table.insert().values(
                {**row, "id": None, "study_id": target, "trial_key": key})).inserted_primary_key[0]
            for epoch in conn.execute(sa.select(epochs_table).where(epochs_table.c.trial_id == row["id"])).mappings():
                conn.execute(epochs_table.insert().values({**epoch, "id": None, "trial_id": copied}))
    engine.dispose()
    assert set(gpu_keys.values()).isdisjoint(recorded.trials.index)  # another device: other keys

    rksearch.run_study(recorded.path, ["name=on-cpu", "resources.gpu=1"], storage=recorded.url, replay="rec-gpu")
    replayed = results.load(recorded.url, "on-cpu", status=None)
    assert set(replayed["status"]) == {"completed"} and len(replayed) == len(recorded.trials)
    by_point = recorded.trials.set_index(["stages", "growth"])["best_val_acc"]
    assert replayed.set_index(["stages", "growth"])["best_val_acc"].sort_index().equals(by_point.sort_index())
    assert _study_row(recorded.url, "on-cpu")["gpu_hours"] > 0  # the recorded study's reservation, simulated


def test_an_interrupted_replay_is_continued_as_a_replay() -> None:
    from rksearch.run import resume_command

    words = resume_command(["study.yaml", "--replay", "rec", "--set", "name=qs-tpe"]).split()
    assert words[words.index("--replay") + 1] == "rec" and words[-1] == "--resume"
