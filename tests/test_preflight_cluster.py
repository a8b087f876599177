"""Preflight against a real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`).

A CPU-only head (like the compose/KubeRay head started with --num-gpus=0) and two workers that
declare one GPU each, so the per-node probes really run on other raylets and GPU fit is judged
per node. One cluster serves the whole module: starting raylets is the slow part.
"""

from __future__ import annotations

import shutil
import socket

import pytest
import ray
from ray.cluster_utils import Cluster

from rksearch.search.preflight import (
    MARKER_PREFIX,
    judge_checkpoints,
    probe_nodes,
    run_preflight,
)

pytestmark = pytest.mark.ray

HUGE = 1 << 60  # no machine has an exabyte of /dev/shm
SMALL_STORE = 80 * 1024**2  # just above Ray's minimum object store, to spare shared memory


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "num_gpus": 0,
            "object_store_memory": SMALL_STORE,
            "include_dashboard": False,
        },
    )
    workers = [
        cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=SMALL_STORE)
        for _ in range(2)
    ]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield [w.node_id for w in workers]
    ray.shutdown()
    cluster.shutdown()


def test_probes_run_on_each_worker_node_and_measure_its_shm(cluster, tmp_path):
    reports, silent = probe_nodes(
        cluster, checkpoint_dir=None, marker_name=None, token=None, timeout_s=60
    )
    assert silent == []
    assert sorted(r.node_id for r in reports) == sorted(cluster)
    # Every "node" is this machine, so each must see the same /dev/shm as we do here.
    real_shm = shutil.disk_usage("/dev/shm").total
    assert {(r.host, r.shm_bytes) for r in reports} == {(socket.gethostname(), real_shm)}
    assert all(r.marker_visible is None for r in reports), "no path given, none probed"


def test_fractional_gpu_study_on_shared_path_passes_and_cleans_up(cluster, tmp_path):
    ckpt = tmp_path / "ckpt"
    problems = run_preflight(
        resources_per_trial={"CPU": 1, "GPU": 0.25},
        checkpoint_path=ckpt,
        min_shm_bytes=1,
        timeout_s=60,
    )
    assert problems == []
    assert list(ckpt.iterdir()) == [], "neither the marker nor a node's scratch file is left"


def test_a_trial_bigger_than_any_one_gpu_node_is_refused(cluster, tmp_path):
    problems = run_preflight(
        resources_per_trial={"CPU": 1, "GPU": 2},
        checkpoint_path=tmp_path,
        min_shm_bytes=1,
        timeout_s=60,
    )
    (problem,) = problems
    assert problem.check == "resources" and problem.severity == "error"
    assert "largest node has 1" in problem.message and "total 2" in problem.message


def test_small_shm_names_the_driver_and_every_worker_once(cluster, tmp_path):
    problems = run_preflight(
        resources_per_trial={"CPU": 1, "GPU": 1},
        checkpoint_path=tmp_path,
        min_shm_bytes=HUGE,
        timeout_s=60,
    )
    (problem,) = [p for p in problems if p.check == "shm"]
    assert problem.severity == "error"
    assert "the driver" in problem.message
    for node_id in cluster:
        assert problem.message.count(f"node {node_id[:8]}") == 1


def test_a_file_the_driver_wrote_elsewhere_is_reported_missing_on_every_worker(cluster, tmp_path):
    # One machine cannot have an unshared directory, so give the nodes a marker that really
    # does not exist at the path: exactly what a worker sees when the path is node-local.
    elsewhere = tmp_path / "on-the-driver-only"
    elsewhere.mkdir()
    reports, silent = probe_nodes(
        cluster,
        checkpoint_dir=str(elsewhere),
        marker_name=f"{MARKER_PREFIX}never-written",
        token="x",
        timeout_s=60,
    )
    assert silent == []
    assert [r.marker_visible for r in reports] == [False, False]
    (problem,) = judge_checkpoints(str(elsewhere), reports)
    assert problem.check == "checkpoints"
    assert all(f"node {n[:8]}" in problem.message for n in cluster)


def test_a_marker_with_the_wrong_token_does_not_count_as_shared(cluster, tmp_path):
    # A stale marker left by an earlier run must not vouch for the path.
    (tmp_path / f"{MARKER_PREFIX}old").write_text("token of an earlier run")
    reports, _ = probe_nodes(
        cluster,
        checkpoint_dir=str(tmp_path),
        marker_name=f"{MARKER_PREFIX}old",
        token="this run",
        timeout_s=60,
    )
    assert [r.marker_visible for r in reports] == [False, False]
    assert all(r.write_error is None for r in reports), "the directory itself is writable"


def test_a_node_that_never_answers_is_reported_not_waited_for(cluster):
    gone = "ab" * 28  # a well-formed node id no raylet has
    reports, silent = probe_nodes(
        [gone], checkpoint_dir=None, marker_name=None, token=None, timeout_s=3
    )
    assert reports == [] and silent == [gone]
