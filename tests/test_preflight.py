"""Preflight checks against a real single-node Ray (no GPU) and a real SQLite/PostgreSQL client.

The per-node probes (marker files, /dev/shm on workers) are exercised on a multi-node
cluster in test_preflight_cluster.py; here the driver-side checks and the judgements.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import ray
import sqlalchemy

from rksearch.search.preflight import (
    MARKER_PREFIX,
    NodeReport,
    PreflightError,
    PreflightProblem,
    check_database,
    check_resources,
    judge_checkpoints,
    raise_for_problems,
    run_preflight,
)

pytestmark = pytest.mark.ray

HUGE = 1 << 60  # no machine has an exabyte of /dev/shm


@pytest.fixture(scope="module")
def local_ray():
    # num_gpus=0 explicitly: on a GPU machine Ray would otherwise detect the real ones.
    ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _checks(problems: list[PreflightProblem], check: str) -> list[PreflightProblem]:
    return [p for p in problems if p.check == check]


def test_gpus_requested_on_a_cluster_without_gpus_is_an_error(local_ray, tmp_path):
    problems = run_preflight(
        resources_per_trial={"CPU": 1, "GPU": 1}, checkpoint_path=tmp_path, min_shm_bytes=1
    )
    (problem,) = problems
    assert problem.check == "resources" and problem.severity == "error"
    assert "1 GPU(s)" in problem.message and "has none" in problem.message
    assert "--num-gpus" in problem.fix


def test_more_cpus_per_trial_than_any_node_has_is_an_error(local_ray, tmp_path):
    problems = run_preflight(
        resources_per_trial={"CPU": 4}, checkpoint_path=tmp_path, min_shm_bytes=1
    )
    (problem,) = problems
    assert problem.check == "resources"
    assert "largest node has 1" in problem.message


def test_a_runnable_cpu_study_passes_and_leaves_no_marker(local_ray, tmp_path):
    ckpt = tmp_path / "deep" / "ckpt"
    assert run_preflight(
        resources_per_trial={"CPU": 1}, checkpoint_path=ckpt, min_shm_bytes=1
    ) == []
    assert ckpt.is_dir(), "the driver creates the checkpoint directory"
    assert not [p for p in ckpt.iterdir() if p.name.startswith(MARKER_PREFIX)]


def test_checkpoint_path_the_driver_cannot_create(local_ray, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    problems = run_preflight(
        resources_per_trial={"CPU": 1}, checkpoint_path=blocker / "ckpt", min_shm_bytes=1
    )
    (problem,) = _checks(problems, "checkpoints")
    assert problem.severity == "error"
    assert str(blocker / "ckpt") in problem.message


def test_object_store_uri_is_passed_through_with_a_note(local_ray, caplog):
    with caplog.at_level(logging.INFO, logger="rksearch.search.preflight"):
        problems = run_preflight(
            resources_per_trial={"CPU": 1},
            checkpoint_path="s3://bucket/rksearch/ckpt",
            min_shm_bytes=1,
        )
    assert problems == []
    assert "s3://bucket/rksearch/ckpt" in caplog.text


@pytest.mark.parametrize(("gpu", "severity"), [(0, "warning"), (1, "error")])
def test_small_shm_is_an_error_with_gpus_and_a_warning_without(local_ray, tmp_path, gpu, severity):
    problems = run_preflight(
        resources_per_trial={"CPU": 1, "GPU": gpu}, checkpoint_path=tmp_path, min_shm_bytes=HUGE
    )
    (problem,) = _checks(problems, "shm")
    assert problem.severity == severity
    assert "the driver" in problem.message
    assert "shm_size" in problem.fix


def test_shm_threshold_is_compared_with_the_real_mount(local_ray, tmp_path):
    import shutil

    real = shutil.disk_usage("/dev/shm").total
    below = run_preflight(
        resources_per_trial={"CPU": 1}, checkpoint_path=tmp_path, min_shm_bytes=real + 1
    )
    at = run_preflight(resources_per_trial={"CPU": 1}, checkpoint_path=tmp_path, min_shm_bytes=real)
    assert len(_checks(below, "shm")) == 1
    assert _checks(at, "shm") == []


def test_resources_fit_is_judged_per_node_and_fractional_gpus_pack():
    two_single_gpu_nodes = [{"Resources": {"CPU": 8, "GPU": 1}}, {"Resources": {"CPU": 8, "GPU": 1}}]
    assert check_resources({"CPU": 2, "GPU": 0.25}, two_single_gpu_nodes) == []
    (problem,) = check_resources({"GPU": 2}, two_single_gpu_nodes)
    assert "largest node has 1" in problem.message and "total 2" in problem.message
    assert check_resources({"GPU": 0}, []) == [], "a CPU study needs no GPU"


def test_unshared_checkpoint_path_names_every_blind_node_in_one_problem():
    reports = [
        NodeReport("a" * 56, "gpu-1", 8 << 30, marker_visible=False, write_error="x"),
        NodeReport("b" * 56, "gpu-2", 8 << 30, marker_visible=True, write_error=None),
        NodeReport("c" * 56, "gpu-3", 8 << 30, marker_visible=True, write_error="PermissionError: denied"),
    ]
    blind, unwritable = judge_checkpoints("/ckpt", reports)
    assert "gpu-1" in blind.message and "gpu-2" not in blind.message
    assert "gpu-3" in unwritable.message and "denied" in unwritable.message
    assert "gpu-1" not in unwritable.message, "a blind node is reported once, as blind"


def test_many_blind_nodes_stay_one_readable_line():
    reports = [NodeReport(f"{i:056x}", f"n{i}", None, False, None) for i in range(40)]
    (problem,) = judge_checkpoints("/ckpt", reports)
    assert "and 35 more" in problem.message
    assert "\n" not in str(problem)


class _Recorder:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_database_reachable_is_opened_once_and_closed(tmp_path):
    handle = _Recorder()
    seen: list[str] = []
    url = f"sqlite:///{tmp_path / 'ok.db'}"

    def open_db(u: str) -> _Recorder:
        sqlalchemy.create_engine(u).connect().close()
        seen.append(u)
        return handle

    assert check_database(url, open_db) == []
    assert seen == [url] and handle.closed


def test_database_in_a_missing_directory_is_reported(tmp_path):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    (problem,) = check_database(url, lambda u: sqlalchemy.create_engine(u).connect())
    assert problem.check == "database" and "OperationalError" in problem.message


def test_database_errors_never_show_the_password():
    pytest.importorskip("psycopg")
    url = "postgresql+psycopg://rk:s3cr3t-pw@127.0.0.1:1/rksearch?connect_timeout=2"

    def open_db(u: str):
        return sqlalchemy.create_engine(u).connect()

    (problem,) = check_database(url, open_db, timeout_s=10)
    assert "s3cr3t-pw" not in str(problem)
    assert "rk:***@127.0.0.1:1/rksearch" in problem.message


def test_database_that_never_answers_times_out_instead_of_hanging():
    release = threading.Event()
    start = time.monotonic()
    try:
        (problem,) = check_database("sqlite://", lambda u: release.wait(60), timeout_s=0.5)
    finally:
        release.set()
    assert time.monotonic() - start < 5
    assert "did not answer within 0.5 s" in problem.message


def test_raise_for_problems_raises_with_every_error_and_only_logs_warnings(caplog):
    warn = PreflightProblem("shm", "small shm", "grow it", severity="warning")
    err1 = PreflightProblem("resources", "no GPUs", "add GPUs")
    err2 = PreflightProblem("database", "db down", "start it")
    with caplog.at_level(logging.WARNING, logger="rksearch.search.preflight"):
        raise_for_problems([warn])
    assert "small shm" in caplog.text
    with pytest.raises(PreflightError) as info:
        raise_for_problems([warn, err1, err2])
    assert info.value.problems == [err1, err2]
    text = str(info.value)
    assert "[resources] no GPUs Fix: add GPUs" in text and "db down" in text
    assert "small shm" not in text


def test_the_engines_call_with_the_real_store_opens_sqlite_and_refuses_a_dead_server(
    local_ray, tmp_path
):
    """The call the engine makes, with `open_store` itself: a good URL passes, a dead one is named."""
    from rksearch.store import open_store

    good = f"sqlite:///{tmp_path / 'results.db'}"
    assert run_preflight(
        resources_per_trial={"CPU": 1}, checkpoint_path=tmp_path / "ckpt",
        storage_url=good, open_db=open_store, min_shm_bytes=1,
    ) == []
    assert (tmp_path / "results.db").is_file()

    pytest.importorskip("psycopg")
    dead = "postgresql+psycopg://rk:pw-never-shown@127.0.0.1:1/rksearch"
    with pytest.raises(PreflightError) as info:
        raise_for_problems(run_preflight(
            resources_per_trial={"CPU": 1}, checkpoint_path=tmp_path / "ckpt",
            storage_url=dead, open_db=open_store, min_shm_bytes=1, timeout_s=20,
        ))
    (problem,) = info.value.problems
    assert problem.check == "database"
    assert "127.0.0.1:1" in str(info.value) and "pw-never-shown" not in str(info.value)
