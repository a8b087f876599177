"""Checks run once at study start so that a misconfigured cluster fails in seconds, not hours.

Every problem found here would otherwise show up late and obscurely: a study asking for GPUs
on a cluster without any sits in Ray's PENDING state forever; a 64 MiB Docker /dev/shm makes
data-loader workers die with "bus error" and pushes Ray's object store to disk; a checkpoint
directory that exists only on the driver's machine lets trials run fine until the first node
dies, when the retried trial finds no checkpoint and starts again from epoch 0; a database the
driver cannot reach loses every result. So each check returns a one-line `PreflightProblem`
with what is wrong and how to fix it, every remote call has a timeout, and nothing here waits
on a trial slot (probes ask for zero CPUs).

Usage by the engine, after `ray.init` and before the Tuner starts::

    raise_for_problems(run_preflight(resources_per_trial={"CPU": 2, "GPU": 0.25},
                                     checkpoint_path=study_checkpoints,
                                     storage_url=url, open_db=store.open_store))
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rksearch.errors import RksearchError
from rksearch.store.urls import redact, scrub

logger = logging.getLogger(__name__)

GiB = 1024**3
DEFAULT_MIN_SHM_BYTES = 2 * GiB
DEFAULT_TIMEOUT_S = 30.0
SHM_PATH = "/dev/shm"
MARKER_PREFIX = ".rksearch-preflight-"
_MAX_NODES_NAMED = 5

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class PreflightProblem:
    """One thing that would make the study hang or lose work, with the fix in one line."""

    check: str  # "resources", "shm", "checkpoints", "nodes", "database"
    message: str
    fix: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"[{self.check}] {self.message} Fix: {self.fix}"


class PreflightError(RksearchError, RuntimeError):
    """Raised with every blocking problem at once, so one restart fixes them all."""

    def __init__(self, problems: Sequence[PreflightProblem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"preflight found {len(self.problems)} problem(s) before any trial started:\n{lines}"
        )


@dataclass(frozen=True)
class NodeReport:
    """What one Ray node saw when probed: its /dev/shm size and the checkpoint path."""

    node_id: str
    host: str
    shm_bytes: int | None  # None: the node has no /dev/shm (e.g. macOS)
    marker_visible: bool | None  # None: no checkpoint path was probed
    write_error: str | None  # why the node could not write under the checkpoint path


def raise_for_problems(problems: Sequence[PreflightProblem]) -> None:
    """Log warnings, raise `PreflightError` if any problem is an error."""
    for problem in problems:
        if problem.severity == "warning":
            logger.warning("preflight: %s", problem)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise PreflightError(errors)


def run_preflight(
    *,
    resources_per_trial: Mapping[str, float],
    checkpoint_path: str | os.PathLike[str] | None,
    storage_url: str | None = None,
    open_db: Callable[[str], Any] | None = None,
    min_shm_bytes: int = DEFAULT_MIN_SHM_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[PreflightProblem]:
    """Run every check against the connected Ray cluster and return all problems found.

    `resources_per_trial` uses Ray's names ("CPU", "GPU", custom ones). `open_db(url)` must
    really connect (and raise when it cannot); whatever it returns is closed if it has
    `close()`. Needs `ray.init` first: the checks look at the cluster the study will use.
    """
    if not ray.is_initialized():
        raise RuntimeError("run_preflight needs a connected Ray (call ray.init first)")
    problems: list[PreflightProblem] = []
    if storage_url is not None and open_db is not None:
        problems += check_database(storage_url, open_db, timeout_s=timeout_s)

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    problems += check_resources(resources_per_trial, nodes)

    shm_sizes: list[tuple[str, int | None]] = [("the driver", shm_size_bytes())]

    local_dir = _local_checkpoint_dir(checkpoint_path)
    marker: Path | None = None
    token: str | None = None
    if local_dir is not None:
        marker, token, problem = _write_driver_marker(local_dir)
        if problem is not None:
            problems.append(problem)
            marker = token = None
    try:
        driver_node = ray.get_runtime_context().get_node_id()
        remote = [n["NodeID"] for n in nodes if n["NodeID"] != driver_node]
        if remote:
            reports, silent = probe_nodes(
                remote,
                checkpoint_dir=str(marker.parent) if marker else None,
                marker_name=marker.name if marker else None,
                token=token,
                timeout_s=timeout_s,
            )
            by_id = {r.node_id: r for r in reports}
            ordered = [by_id[i] for i in remote if i in by_id]
            shm_sizes += [(_node_label(r), r.shm_bytes) for r in ordered]
            if marker is not None:
                problems += judge_checkpoints(str(marker.parent), ordered)
            if silent:
                problems.append(_silent_nodes_problem(silent, timeout_s))
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    uses_gpu = resources_per_trial.get("GPU", 0) > 0
    return problems + judge_shm(shm_sizes, min_shm_bytes, uses_gpu=uses_gpu)


def check_resources(
    per_trial: Mapping[str, float], nodes: Sequence[Mapping[str, Any]]
) -> list[PreflightProblem]:
    """A trial's resources must exist in the cluster and fit on one node, or it pends forever.

    Tune places a trial's resources as one bundle, so the largest node matters, not the sum.
    Fractional amounts (GPU 0.25 to pack four trials per GPU) fit any node with one GPU.
    """
    problems = []
    for name, amount in sorted(per_trial.items()):
        if amount <= 0:
            continue
        per_node = [float(n.get("Resources", {}).get(name, 0.0)) for n in nodes]
        total, largest = sum(per_node), max(per_node, default=0.0)
        unit = _resource_unit(name)
        if total == 0:
            problems.append(
                PreflightProblem(
                    "resources",
                    f"each trial asks for {amount:g} {unit} but the Ray cluster has none "
                    f"({len(nodes)} alive node(s)); every trial would wait forever.",
                    _no_resource_fix(name),
                )
            )
        elif largest < amount:
            problems.append(
                PreflightProblem(
                    "resources",
                    f"each trial asks for {amount:g} {unit} on one node but the largest node "
                    f"has {largest:g} (cluster total {total:g}); no trial could start.",
                    f"ask for at most {largest:g} {unit} per trial, or add a node with "
                    f"at least {amount:g}.",
                )
            )
    return problems


def judge_shm(
    sizes: Sequence[tuple[str, int | None]], min_bytes: int, *, uses_gpu: bool
) -> list[PreflightProblem]:
    """One problem naming every place whose /dev/shm is below `min_bytes`.

    `sizes` holds (where, bytes or None). Small /dev/shm breaks PyTorch data-loader
    workers and pushes Ray's object store to disk; with GPUs that is a failed or starved
    study (error), on CPU only a slowdown (warning). Places without /dev/shm are skipped.
    """
    small = [(label, size) for label, size in sizes if size is not None and size < min_bytes]
    if not small:
        return []
    where = _name_some([f"{label} ({_fmt_bytes(size)})" for label, size in small])
    return [
        PreflightProblem(
            "shm",
            f"/dev/shm is smaller than {_fmt_bytes(min_bytes)} on {where}; data-loader "
            "workers crash with 'bus error' and Ray's object store spills to disk.",
            "Docker: --shm-size=8g (compose: shm_size: 8gb); Kubernetes: mount an emptyDir "
            "with medium: Memory at /dev/shm.",
            severity="error" if uses_gpu else "warning",
        )
    ]


def judge_checkpoints(path: str, reports: Sequence[NodeReport]) -> list[PreflightProblem]:
    """Nodes that cannot see the driver's marker, or cannot write, break trial resumption."""
    problems = []
    blind = [_node_label(r) for r in reports if r.marker_visible is False]
    if blind:
        problems.append(
            PreflightProblem(
                "checkpoints",
                f"checkpoint path {path} is not shared: a file the driver wrote there is not "
                f"visible on {_name_some(blind)}, so a trial retried there would restart "
                "from epoch 0.",
                "put storage.checkpoints on a filesystem mounted at the same path on every "
                "node (NFS, a shared volume) or use an object-store URI (s3://, gs://).",
            )
        )
    unwritable = [
        f"{_node_label(r)}: {r.write_error}"
        for r in reports
        if r.marker_visible and r.write_error is not None
    ]
    if unwritable:
        problems.append(
            PreflightProblem(
                "checkpoints",
                f"checkpoint path {path} is not writable on {_name_some(unwritable)}.",
                "give the user Ray runs as on those nodes write access to the path "
                "(same uid on every node, or a group-writable directory).",
            )
        )
    return problems


def check_database(
    url: str, open_db: Callable[[str], Any], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[PreflightProblem]:
    """Open the database once, in a thread with a deadline, so a firewalled host can't hang us.

    Messages show the URL with its password masked and never the password itself.
    """
    shown = redact(url)
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["handle"] = open_db(url)
        except Exception as exc:  # any failure to open is the finding itself
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name="rksearch-preflight-db", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        return [
            PreflightProblem(
                "database",
                f"the database {shown} did not answer within {timeout_s:g} s.",
                "check host, port and firewall from the driver's machine (for PostgreSQL: "
                "`pg_isready -h HOST -p PORT`).",
            )
        ]
    if "error" in outcome:
        error = outcome["error"]
        detail = scrub(f"{type(error).__name__}: {error}".splitlines()[0], url)
        return [
            PreflightProblem(
                "database",
                f"the driver cannot open the database {shown}: {detail}",
                "check the --storage URL (driver, host, port, database name, credentials) "
                "and that the server is running and reachable from the driver.",
            )
        ]
    close = getattr(outcome.get("handle"), "close", None)
    if callable(close):
        close()
    return []


def probe_nodes(
    node_ids: Sequence[str],
    *,
    checkpoint_dir: str | None,
    marker_name: str | None,
    token: str | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[list[NodeReport], list[str]]:
    """Run one tiny zero-CPU task pinned to each node; return its reports and the silent nodes.

    Zero CPUs so a busy cluster still runs the probe; `soft=False` so a probe never lands on
    another node and vouches for the wrong machine; one shared deadline for all of them.
    """
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_node)
    refs = {
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote(checkpoint_dir, marker_name, token): node_id
        for node_id in node_ids
    }
    done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    reports, silent = [], []
    for ref in done:
        try:
            reports.append(ray.get(ref, timeout=timeout_s))
        except ray.exceptions.RayError as exc:
            logger.warning("preflight probe on node %s failed: %s", refs[ref], exc)
            silent.append(refs[ref])
    for ref in pending:
        ray.cancel(ref, force=True)
        silent.append(refs[ref])
    return reports, silent


def shm_size_bytes(path: str = SHM_PATH) -> int | None:
    """Size of the shared-memory mount (what --shm-size sets), or None where there is none."""
    try:
        return shutil.disk_usage(path).total
    except FileNotFoundError:
        return None


def _probe_node(
    checkpoint_dir: str | None, marker_name: str | None, token: str | None
) -> NodeReport:
    """Runs on one node: measure /dev/shm, look for the driver's marker, try writing beside it.

    Never creates the checkpoint directory: making a node-local copy would hide exactly the
    unshared path this is meant to find.
    """
    node_id = ray.get_runtime_context().get_node_id()
    visible: bool | None = None
    write_error: str | None = None
    if checkpoint_dir is not None and marker_name is not None:
        marker = Path(checkpoint_dir) / marker_name
        try:
            visible = marker.read_text() == token
        except OSError:
            visible = False
        scratch = Path(checkpoint_dir) / f"{marker_name}.{node_id}"
        try:
            scratch.write_text(node_id)
            scratch.unlink()
        except OSError as exc:
            write_error = f"{type(exc).__name__}: {exc.strerror or exc}"
    return NodeReport(node_id, socket.gethostname(), shm_size_bytes(), visible, write_error)


def _local_checkpoint_dir(path: str | os.PathLike[str] | None) -> Path | None:
    """The absolute local directory to probe, or None for no path / an object-store URI."""
    if path is None:
        return None
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        logger.info(
            "preflight: checkpoint path %s is a URI; Ray Tune checks it when the study "
            "starts, and every node needs credentials for it",
            text,
        )
        return None
    return Path(text).expanduser().absolute()


def _write_driver_marker(
    directory: Path,
) -> tuple[Path | None, str | None, PreflightProblem | None]:
    """Create the checkpoint directory and a marker file holding a random token."""
    token = uuid.uuid4().hex
    marker = directory / f"{MARKER_PREFIX}{token}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
    except OSError as exc:
        return (
            None,
            None,
            PreflightProblem(
                "checkpoints",
                f"the driver cannot create or write the checkpoint path {directory}: "
                f"{type(exc).__name__}: {exc.strerror or exc}",
                "choose a directory the driver's user can write, mounted on every node.",
            ),
        )
    return marker, token, None


def _silent_nodes_problem(node_ids: Sequence[str], timeout_s: float) -> PreflightProblem:
    return PreflightProblem(
        "nodes",
        f"{_name_some([f'node {n[:8]}' for n in node_ids])} did not answer a zero-CPU "
        f"probe within {timeout_s:g} s, so their /dev/shm and checkpoint path are unchecked.",
        "see `ray status` and the node's raylet.out; a node that cannot start a worker "
        "will not run trials either.",
        severity="warning",
    )


def _node_label(report: NodeReport) -> str:
    return f"node {report.node_id[:8]} ({report.host})"


def _name_some(items: Sequence[str]) -> str:
    """Name up to a few items, then count the rest, so 200 broken nodes stay one line."""
    shown = ", ".join(items[:_MAX_NODES_NAMED])
    extra = len(items) - _MAX_NODES_NAMED
    return f"{shown} and {extra} more" if extra > 0 else shown


def _resource_unit(name: str) -> str:
    return {"CPU": "CPU(s)", "GPU": "GPU(s)"}.get(name, f"unit(s) of {name!r}")


def _no_resource_fix(name: str) -> str:
    if name == "GPU":
        return (
            "start GPU workers with an explicit count (ray start --num-gpus=N; in containers "
            "pass the GPUs through), check `ray status`, or set the study's resources.gpu to 0."
        )
    return f"start nodes that declare {name} (ray start --num-cpus / --resources), see `ray status`."


def _fmt_bytes(n: int) -> str:
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    return f"{n / 1024**2:.0f} MiB"
