"""One local Ray for the whole test session (2 CPUs, no dashboard), shared by every engine test.

Starting Ray costs seconds, so it starts once, on first use.  ``address="local"`` always starts a
fresh instance: it never joins a cluster some other process on this machine started with
``ray start``.  `engine.run_study` sees ``ray.is_initialized()`` and uses this Ray as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
