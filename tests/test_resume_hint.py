"""The line printed after Ctrl-C is the whole command that continues the same study.

Unit tests of `run.resume_command`, and one real run: a driver subprocess is sent SIGINT once
it has recorded an epoch, and the command it prints is run exactly as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

import driver

from rksearch.run import parser, resume_command
from rksearch.store.schema import epochs, studies, trials
from test_engine import TINY


def _parsed(words: list[str]) -> dict:
    return vars(parser().parse_args(words))


def test_resume_command_is_the_whole_command_shell_quoted() -> None:
    argv = ["studies/quick start.yaml", "--set", "space={stages: [1]}", "--set", "name=x", "--storage",
            "sqlite:///tmp/a b.db", "--storage-path", "/tmp/ck", "--address", "auto", "--no-preflight", "-v"]
    hint = resume_command(argv)
    assert "'space={stages: [1]}'" in hint and "'studies/quick start.yaml'" in hint
    words = shlex.split(hint)
    assert words[0] in ("python", sys.executable) and words[1:3] == ["-m", "rksearch.run"]
    assert words.count("--resume") == 1
    assert _parsed(words[3:]) == {**_parsed(argv), "resume": True}  # every option kept, in order


def test_resume_command_adds_resume_once_and_drops_dry_run() -> None:
    for argv in (["s.yaml", "--resume"], ["s.yaml", "--res", "--dry-run"], ["--resume", "s.yaml", "--resume"]):
        words = shlex.split(resume_command(argv))
        assert words[3:] == ["s.yaml", "--resume"], argv


def test_resume_command_spells_out_abbreviations_and_equals_forms() -> None:
    argv = ["s.yaml", "--set=train.epochs=3", "--storage-p", "ck dir", "--storage=sqlite:///a.db", "--addr=auto",
            "--dry"]
    words = shlex.split(resume_command(argv))
    assert words[3:] == ["s.yaml", "--set", "train.epochs=3", "--storage", "sqlite:///a.db",
                         "--storage-path", "ck dir", "--address", "auto", "--resume"]


def test_resume_command_keeps_a_study_path_that_looks_like_an_option() -> None:
    words = shlex.split(resume_command(["--", "-odd.yaml"]))
    assert words[3:] == ["--resume", "--", "-odd.yaml"]
    assert _parsed(words[3:])["study"] == "-odd.yaml"


# ---- the real thing: Ctrl-C a driver, run what it prints ------------------------------------------

def _study_text() -> str:
    """test_engine's tiny grid cut to two trials run one at a time."""
    doc = yaml.safe_load(TINY.format(name="not-this-name"))
    doc["space"]["growth"] = [4]
    doc["search"] = {"max_concurrent": 1}
    return yaml.safe_dump(doc)


def _state(db: Path, name: str) -> tuple[str | None, list[str], int]:
    """Study `name`'s status, its trials' statuses and its number of epoch rows (None, [], 0 before any)."""
    if not db.exists():
        return None, [], 0
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(studies.c.id, studies.c.status).where(studies.c.name == name)).first()
            if row is None:
                return None, [], 0
            statuses = list(conn.execute(sa.select(trials.c.status).where(trials.c.study_id == row.id)).scalars())
            joined = epochs.join(trials, epochs.c.trial_id == trials.c.id)
            n = conn.execute(sa.select(sa.func.count()).select_from(joined)
                             .where(trials.c.study_id == row.id)).scalar_one()
            return row.status, statuses, n
    except sa.exc.OperationalError:  # tables not created yet, or briefly locked
        return None, [], 0
    finally:
        engine.dispose()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_printed_hint_resumes_the_same_study_after_ctrl_c(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(_study_text())
    db = tmp_path / "a.db"
    cmd = [sys.executable, "-m", "rksearch.run", "study.yaml", "--storage", f"sqlite:///{db}",
           "--storage-path", str(tmp_path / "ck"), "--set", "name=hinted", "--set", "train.epochs=40",
           "--no-preflight"]
    env = driver.env()  # the driver starts its own Ray, never the test's or anyone else's
    # its own session, so the Ctrl-C below reaches the driver alone, as the test chooses
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        # an epoch recorded: training is under way, with ~80 epochs to go (pytest's timeout bounds the wait)
        while _state(db, "hinted")[2] < 1:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGINT)  # the driver only, as a terminal's Ctrl-C would reach it first
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out + err)[-3000:]
    assert "Traceback" not in err, err[-3000:]
    status, statuses, _ = _state(db, "hinted")
    assert status == "interrupted" and statuses.count("completed") < 2, (status, statuses)

    [hint] = re.findall(r"continue with\s+(.+)", out + err)
    words = shlex.split(hint)
    assert words.count("--resume") == 1 and "name=hinted" in words and f"sqlite:///{db}" in words
    again = subprocess.run(words, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=200,
                           start_new_session=True)
    assert again.returncode == 0, again.stderr[-3000:]
    status, statuses, n = _state(db, "hinted")
    assert status == "completed" and statuses == ["completed"] * 2, (status, statuses)
    assert n == 2 * 40  # the --set epochs (the file says 2), each recorded once
    assert not (tmp_path / "rksearch.db").exists()  # nothing went to the default database
