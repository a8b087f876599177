"""optuna-dashboard serves a study from the database URL rksearch writes: the real server, read
through its JSON API (the routes of optuna_dashboard._app: ``/api/studies``,
``/api/studies/<id>``).

The server runs as its own process on the loopback interface and a free port, and is stopped
at the end.  The test is skipped only when the ``optuna-dashboard`` command is not installed
(the dashboard extra); a server that starts and then cannot read the database fails it.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

pytestmark = pytest.mark.timeout(120)

#: how long the server may take to answer its first request
START_TIMEOUT_S = 60.0


def _command() -> str | None:
    """The optuna-dashboard beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("optuna-dashboard")
    return str(beside) if beside.exists() else shutil.which("optuna-dashboard")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as reply:
        return json.load(reply)


def _wait_until_serving(server: subprocess.Popen, base: str, log: Path) -> None:
    """Poll the study list until the server answers; fail with its log if it exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            _get(base, "/api/studies")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            assert server.poll() is None, f"optuna-dashboard exited {server.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"optuna-dashboard did not answer in {START_TIMEOUT_S:g} s"
            time.sleep(0.2)


def dashboard(url: str, log: Path) -> Iterator[str]:
    """Serve `url` with the real optuna-dashboard; yield its base address, stop it afterwards."""
    command = _command()
    if command is None:
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dashboard]')")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        server = subprocess.Popen([command, url, "--host", "127.0.0.1", "--port", str(port)], stdout=out,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_until_serving(server, base, log)
        yield base
    finally:
        server.send_signal(signal.SIGINT)  # gunicorn's quick shutdown (SIGTERM waits for its workers)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def study_in_dashboard(base: str, name: str) -> dict:
    """The dashboard's detail of study `name`: found in its list, then read by id."""
    listed = {study["study_name"]: study for study in _get(base, "/api/studies")["study_summaries"]}
    assert name in listed, sorted(listed)
    return _get(base, f"/api/studies/{listed[name]['study_id']}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A plain Optuna database (4 completed trials, 1 pruned) and the dashboard serving it."""
    tmp = tmp_path_factory.mktemp("plain")
    url = f"sqlite:///{tmp / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plain", storage=url, direction="maximize")
    space = {"stages": IntDistribution(1, 5)}
    for stages in (1, 2, 3, 4):
        study.add_trial(create_trial(params={"stages": stages}, distributions=space, value=0.5 + 0.1 * stages))
    study.add_trial(create_trial(params={"stages": 5}, distributions=space, state=TrialState.PRUNED,
                                 intermediate_values={0: 0.4}))  # fmt: skip
    yield from dashboard(url, tmp / "dashboard.log")


def test_the_dashboard_serves_a_plain_optuna_study(plain: str) -> None:
    detail = study_in_dashboard(plain, "plain")
    assert detail["name"] == "plain" and detail["directions"] == ["maximize"]
    assert len(detail["trials"]) == 5
    assert [trial["state"] for trial in detail["trials"]].count("Complete") == 4
    assert [trial["params"][0]["param_external_value"] for trial in detail["best_trials"]] == ["4"]
