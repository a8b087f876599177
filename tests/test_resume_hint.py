"""The line printed after Ctrl-C is the whole command that continues the same study.

Unit tests of `run.resume_command`, and one real run: a driver subprocess is sent SIGINT once
it has recorded an epoch, and the command it prints is run exactly as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from pathlib import Path

import driver
import pytest
import yaml
from test_engine import TINY

from rksearch.run import parser, resume_command


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


def test_resume_command_never_prints_a_database_password() -> None:
    argv = ["s.yaml", "--storage", "postgresql+psycopg://bob:s3cret@db.example:5432/rk"]
    hint = resume_command(argv)
    assert "s3cret" not in hint and "***" not in hint  # left out, not masked: the command still connects
    assert "postgresql+psycopg://bob@db.example:5432/rk" in shlex.split(hint)


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


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_printed_hint_resumes_the_same_study_after_ctrl_c(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(_study_text())
    db = tmp_path / "a.db"
    cmd = driver.command(Path("study.yaml"), db, tmp_path / "ck", "--set", "name=hinted", "--set", "train.epochs=15")
    # an epoch recorded: training is under way, with ~30 epochs to go; then Ctrl-C, as a terminal's
    # reaches the driver first (its own session: nothing else gets it)
    returncode, err = driver.stop_when(cmd, tmp_path, ready=lambda: bool(driver.state(db, "hinted")[2]),
                                       stop=lambda proc: os.kill(proc.pid, signal.SIGINT))
    assert returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "A new study created" not in err  # Optuna's own log lines stay out of the terminal
    status, rows, _ = driver.state(db, "hinted")
    statuses = [r["status"] for r in rows]
    assert status == "interrupted" and statuses.count("completed") < 2, (status, statuses)

    [hint] = re.findall(r"continue with\s+(.+)", err)
    words = shlex.split(hint)
    assert words.count("--resume") == 1 and "name=hinted" in words and f"sqlite:///{db}" in words
    again = driver.run(words, tmp_path, timeout=200)
    assert again.returncode == 0, again.stderr[-3000:]
    status, rows, pairs = driver.state(db, "hinted")
    assert status == "completed" and [r["status"] for r in rows] == ["completed"] * 2, (status, rows)
    assert len(pairs) == len(set(pairs)) == 2 * 15  # the --set epochs (the file says 2), each recorded once
    assert not (tmp_path / "rksearch.db").exists()  # nothing went to the default database
