"""One local Ray per test module (2 CPUs, no dashboard), shared by the module's engine tests.

Starting Ray costs seconds, so it starts once per module, on first use; it is shut down at the
module's end because other modules start Ray clusters of their own (multi-node, fake GPUs).  ``address="local"`` always starts a
fresh instance: it never joins a cluster some other process on this machine started with
``ray start``.  `engine.run_study` sees ``ray.is_initialized()`` and uses this Ray as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
