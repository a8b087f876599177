"""Failure categories from the texts the real exceptions give (their tracebacks and their messages)."""

from __future__ import annotations

import errno
import traceback

import pytest
import ray.exceptions
import torch

from rksearch.training import failures
from rksearch.training.checkpoint import UnreadableCheckpoint
from rksearch.training.data import DataError


def _texts(exc: BaseException) -> list[str]:
    """What the callback may see: Ray's saved traceback (class name included) or the bare message."""
    return ["".join(traceback.format_exception_only(type(exc), exc)), str(exc)]


@pytest.mark.parametrize("exc, category", [
    (ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory."), "out_of_memory"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory"),
    (MemoryError("Cannot allocate memory"), "out_of_memory"),
    (OSError(errno.ENOSPC, "No space left on device"), "storage_full"),
    (UnreadableCheckpoint("ck/checkpoint.pt", "truncated: 10 bytes"), "checkpoint"),
    (DataError("cifar10 not found under /data/cifar-10-batches-py: missing /data/cifar-10-batches-py/data_batch_1."), "data_missing"),
    (ray.exceptions.NodeDiedError("The node with node id 3f2a has died."), "node_lost"),
    (ray.exceptions.ActorDiedError(), "worker_crash"),
    (ray.exceptions.WorkerCrashedError(), "worker_crash"),
    (ValueError("shapes (3, 4) and (5, 6) do not match"), "error"),
])
def test_real_exceptions_fall_in_their_category(exc: BaseException, category: str) -> None:
    assert [failures.classify(text) for text in _texts(exc)] == [category, category]


def test_a_worker_killed_for_memory_is_out_of_memory_not_a_crash() -> None:
    # what Ray's memory monitor leaves: an ActorDiedError whose cause names the memory pressure
    text = ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
            "\tclass_name: ImplicitFunc\nWorkers (tasks / actors) killed due to memory pressure (OOM), ")
    assert failures.classify(text) == "out_of_memory"


def test_only_the_trials_own_faults_stay_failed_on_resume() -> None:
    assert {c for c in failures.CATEGORIES if not failures.retried_on_resume(c)} == {"diverged", "error"}
    assert all(failures.retried_on_resume(c, retry_failed=True) for c in failures.CATEGORIES)
    assert failures.retried_on_resume(None)  # recorded before categories existed
