"""The one `rksearch` command, its shared error handling and its --storage default.

The console script is run as a user runs it (a subprocess); where the package is not installed
(no `rksearch` script on the PATH of this interpreter) the same `main` runs as
``python -m rksearch.cli``, so everything but the script's installation is still checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from studyframes import figure4_frame, store_frame

import rksearch
from rksearch import cli, plot, results
from rksearch.errors import RksearchError
from rksearch.run import EPILOG as RUN_EXAMPLES
from rksearch.store.db import StoreError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = shutil.which("rksearch", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "rksearch.cli"]


def rksearch_cli(*argv: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """`rksearch ARGV...` in `cwd`, with `env` added to this process's environment and no
    $RKSEARCH_STORAGE unless `env` gives one."""
    environment = {k: v for k, v in os.environ.items() if k != cli.STORAGE_ENV} | env
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    return subprocess.run([*COMMAND, *argv], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file holding the Figure-4 study as 'fig4', away from any current directory."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'elsewhere.db'}"
    store_frame(url, "fig4", figure4_frame())
    return url


# ------------------------------------------------------------------ the command


def test_the_console_script_is_rksearch_cli_main() -> None:
    try:
        scripts = metadata.entry_points(group="console_scripts", name="rksearch")
    except metadata.PackageNotFoundError:  # pragma: no cover - depends on the installation
        scripts = ()
    if not scripts:
        pytest.skip("rksearch is not installed (pip install -e .): no console script to check")
    assert [s.value for s in scripts] == ["rksearch.cli:main"]


def test_version() -> None:
    done = rksearch_cli("--version")
    assert (done.returncode, done.stdout) == (0, f"rksearch {rksearch.__version__}\n")


def test_cost_is_python_m_rksearch_cost() -> None:
    done = rksearch_cli("cost", "ERKNet-1x1 1x1 1x1", "--json")
    assert done.returncode == 0, done.stderr
    cost = json.loads(done.stdout)
    assert cost["name"] == "ERKNet-1x1 1x1 1x1" and cost["params"] > 0 and cost["flops"] == 2 * cost["macs"]
    same = subprocess.run([sys.executable, "-m", "rksearch.cost", "ERKNet-1x1 1x1 1x1", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert json.loads(same.stdout) == cost


def test_run_help_shows_runs_own_help_with_its_examples() -> None:
    done = rksearch_cli("run", "--help")
    assert done.returncode == 0, done.stderr
    assert "--dry-run" in done.stdout and "--resume" in done.stdout
    for example in RUN_EXAMPLES.strip().splitlines()[1:]:
        assert example.strip() in done.stdout


@pytest.mark.parametrize("argv, says", [(["fit", "x.yaml"], "unknown command 'fit'"),
                                        ([], "the following arguments are required: COMMAND")])
def test_an_unknown_or_missing_command_exits_2(argv: list[str], says: str) -> None:
    done = rksearch_cli(*argv)
    assert done.returncode == 2 and says in done.stderr and done.stdout == ""
    if argv:
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_top_level_help_lists_every_command() -> None:
    done = rksearch_cli("--help")
    assert done.returncode == 0
    for command, what in cli.COMMANDS.items():
        assert f"{command:<8} {what}" in done.stdout


@pytest.mark.parametrize("module", ["plot", "results", "cost", "run"])
def test_every_command_has_whole_help_in_both_spellings(module: str, capsys) -> None:
    """The same help either way, but each names the command as it was called."""
    with pytest.raises(SystemExit) as exited:
        cli.main([module, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: rksearch {module} ")
    description = text.split("\n\n")[1]
    assert description.rstrip().endswith("."), description  # a sentence, not cut mid-way
    python_m = subprocess.run([sys.executable, "-m", f"rksearch.{module}", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert python_m.returncode == 0 and python_m.stdout.startswith(f"usage: python -m rksearch.{module} ")
    # the usage wraps where the name's length puts it: compare the words
    assert python_m.stdout.replace(f"python -m rksearch.{module}", f"rksearch {module}", 1).split() == text.split()


def test_a_commands_own_usage_errors_name_it_as_called() -> None:
    done = rksearch_cli("results", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: rksearch results ")
    refused = rksearch_cli("results", "show")  # no study
    assert refused.returncode == 2 and refused.stderr.startswith("usage: rksearch results show ")


def test_plot_help_names_every_kind_and_example() -> None:
    text = plot._parser().format_help()
    assert "Draw a study's results straight from the database, without Ray or a display." in text
    width = max(map(len, plot.KINDS))  # the kinds' column is as wide as the longest name
    for kind, what in plot.KINDS.items():
        assert f"{kind:<{width}} {what}" in text and f"rksearch plot {kind} " in text


# ------------------------------------------------------------------ --storage and $RKSEARCH_STORAGE


def test_results_reads_rksearch_storage(database: str, tmp_path: Path) -> None:
    listed = rksearch_cli("results", "ls", cwd=tmp_path, RKSEARCH_STORAGE=database)
    assert listed.returncode == 0, listed.stderr
    assert "fig4" in listed.stdout
    assert not (tmp_path / "rksearch.db").exists()  # the current directory was never read or made


def test_without_flag_or_variable_the_current_directorys_database(tmp_path: Path) -> None:
    done = rksearch_cli("results", "ls", cwd=tmp_path)
    assert done.returncode == 2 and "no database at" in done.stderr and "rksearch.db" in done.stderr
    assert done.stderr.count("\n") == 1


def test_the_flag_beats_the_variable(database: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(cli.STORAGE_ENV, f"sqlite:///{tmp_path / 'absent.db'}")
    assert results.main(["show", "fig4", "--storage", database]) == 0
    assert "ERKNet" in capsys.readouterr().out
    assert results.main(["show", "fig4"]) == 2
    assert "absent.db" in capsys.readouterr().err


def test_plot_and_the_analysis_scripts_read_rksearch_storage(database: str, tmp_path: Path, monkeypatch,
                                                             capsys) -> None:  # fmt: skip
    import runpy

    monkeypatch.setenv(cli.STORAGE_ENV, database)
    monkeypatch.chdir(tmp_path)
    assert plot.main(["curves", "--study", "fig4", "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    table1 = runpy.run_path(str(ROOT / "analysis" / "table1.py"))["main"]
    assert table1(["--study", "fig4", "--metric", "best_val_error"]) == 0
    assert "ERKNet-7x1 7x1 7x1" in capsys.readouterr().out
    assert not (tmp_path / "rksearch.db").exists()


def test_storage_help_names_the_variable_not_its_value(monkeypatch) -> None:
    monkeypatch.setenv(cli.STORAGE_ENV, "postgresql+psycopg://ada:Secr3tPw@db/rk")
    text = plot._parser().format_help()
    assert "$RKSEARCH_STORAGE" in text and "Secr3tPw" not in text


# ------------------------------------------------------------------ the error handler


def test_rksearch_errors_are_one_line_and_exit_2(capsys) -> None:
    @cli.exits_on_error(KeyError)
    def main(argv: list[str] | None = None) -> int:
        kind = argv[0]
        if kind == "store":
            raise StoreError("cannot open postgresql+psycopg://ada:Secr3tPw@db:5432/rk: refused\nDETAIL: more")
        if kind == "key":
            raise KeyError("no 'neck' column")
        raise RuntimeError("a bug")

    assert main(["store"]) == 2
    err = capsys.readouterr().err
    assert err == "error: cannot open postgresql+psycopg://ada:***@db:5432/rk: refused; DETAIL: more\n"
    assert main(["key"]) == 2
    assert capsys.readouterr().err == "error: no 'neck' column\n"  # its text, not its quoted repr
    with pytest.raises(RuntimeError):  # not a user error: the traceback stays
        main(["bug"])


def test_the_errors_results_and_the_scripts_raise_are_rksearch_errors() -> None:
    import runpy

    from rksearch.analysis.trained import ModelError

    claim_error = runpy.run_path(str(ROOT / "analysis" / "claims.py"))["ClaimError"]
    for error in (StoreError, ModelError, claim_error):
        assert issubclass(error, RksearchError), error
