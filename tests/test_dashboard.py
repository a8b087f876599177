"""optuna-dashboard serves a study from the database URL rksearch writes: the real server, read
through its JSON API (the routes of optuna_dashboard._app: ``/api/studies``,
``/api/studies/<id>``).

First a plain Optuna database, then a real quickstart run (the quickstart study file, shrunk
with ``--set`` to three tiny trainings and a skipped grid point): its Optuna mirror opens in the
dashboard and in `rksearch plot importance`, beside our own tables, which still read the same,
so the two schemas live in one database.

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
from driver import REPO, command, run
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from rksearch import plot, results

pytestmark = pytest.mark.timeout(300)

#: the quickstart shrunk to three trainings of one epoch on 128 images; clique with one stage
#: per period is skipped (the clique form needs two), as in the full quickstart
QUICKSTART = ["--set", "train.epochs=1", "--set", "data.limit_train=128", "--set", "space.stages=[1, 2]",
              "--set", "space.growth=[4]"]  # fmt: skip

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


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real, tiny quickstart run into SQLite, its rows, and the dashboard serving its database."""
    tmp = tmp_path_factory.mktemp("quickstart")
    done = run(command(REPO / "studies" / "quickstart.yaml", tmp / "rksearch.db", tmp / "ck", *QUICKSTART), cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    url = f"sqlite:///{tmp / 'rksearch.db'}"
    rows = results.load(url, "quickstart", status=None)
    for base in dashboard(url, tmp / "dashboard.log"):
        yield {"url": url, "rows": rows, "base": base, "tmp": tmp}


def test_the_dashboard_serves_a_real_quickstart_beside_our_tables(quickstart: dict) -> None:
    rows = quickstart["rows"]
    assert sorted(rows.status) == ["completed", "completed", "completed", "skipped"]
    trained = rows[rows.status == "completed"]
    detail = study_in_dashboard(quickstart["base"], "quickstart")
    assert detail["directions"] == ["maximize"]
    assert len(detail["trials"]) == len(trained)  # a skipped trial is no Optuna trial
    assert {trial["state"] for trial in detail["trials"]} == {"Complete"}
    keys = {attr["value"] for trial in detail["trials"] for attr in trial["user_attrs"] if attr["key"] == "trial_key"}
    assert keys == set(trained.trial_key)
    assert {param["name"] for trial in detail["trials"] for param in trial["params"]} == {"form", "stages", "growth"}


def test_rksearch_plot_draws_optunas_importances_of_the_real_study(quickstart: dict, capsys) -> None:
    out = quickstart["tmp"] / "importance.png"
    assert plot.main(["importance", "--study", "quickstart", "--storage", quickstart["url"], "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("importance (fANOVA): ") and printed[-1] == f"wrote {out}"
    assert {item.rsplit(" ", 1)[0] for item in printed[0].split(": ", 1)[1].split(", ")} == {"form", "stages", "growth"}
    assert out.read_bytes().startswith(b"\x89PNG")
