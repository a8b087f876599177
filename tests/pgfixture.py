"""PostgreSQL for the store tests: the CI server, or one started here through .ci/postgres.sh.

`.ci/run` starts a server and exports RKSEARCH_TEST_POSTGRES_URL; a plain `pytest` run starts
its own with the same script (kept running by a bash process until the session ends), so the
PostgreSQL tests run wherever PostgreSQL is installed and skip with the script's reason where
it cannot start.  Every test gets a fresh database on that server.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

ENV_URL = "RKSEARCH_TEST_POSTGRES_URL"
SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"

#: sources the CI script, prints the URL it exported, then holds the server until stdin closes
_HOLD = f'source "{SCRIPT}"; echo "URL=${{{ENV_URL}:-}}"; read -r _'


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a running PostgreSQL server (trust auth on loopback), or skip with the reason."""
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    holder = subprocess.Popen(["bash", "-c", _HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdin is not None
    said = []
    url = ""
    for line in holder.stdout:
        if line.startswith("URL="):
            url = line[4:].strip()
            break
        said.append(line.strip())
    try:
        if not url:
            pytest.skip("PostgreSQL could not be started: " + " / ".join(said))
        yield url
    finally:
        holder.stdin.close()  # the script's EXIT trap stops the server and removes its files
        holder.wait(timeout=60)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # name is ours: hex only
    try:
        yield sa.make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on an embedded SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("pg_url")
