"""Study files and the plan they make, without Ray: errors say file:line, field and what is allowed;
a bad file or a dry run writes nothing; budgets, dedup and search counts shape the plan."""

from __future__ import annotations

import copy
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rksearch import run
from rksearch.search.loader import MAX_EXPANDED_VALUES, StudyError, loads
from rksearch.search.planner import Planner

#: a small valid study; the line numbers below are counted in this text
TINY = """\
name: tiny
data:
  dataset: digits
  batch_size: 32
  limit_train: 64
  limit_val: 64
train:
  epochs: 1
model:
  periods: 2
  steps: 1
space:
  stages: [1, 2]
  growth: [4]
resources:
  cpu: 1
seeds: [0]
"""


def problems(text: str, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(StudyError) as info:
        loads(text, source="s.yaml", overrides=overrides)
    return info.value.problems


def plan(text: str, overrides: list[str] | None = None) -> list:
    return Planner(loads(text, overrides=overrides)[0]).plan()


# ---- errors -------------------------------------------------------------------------------------

def test_unknown_key_names_its_line_and_the_allowed_keys() -> None:
    [line] = problems(TINY.replace("  epochs: 1\n", "  epochs: 1\n  epoch: 3\n"))
    assert line.startswith("s.yaml:9: train.epoch: unknown field 'epoch'; allowed: ")
    allowed = line.split("allowed: ")[1].split(", ")
    assert {"lr", "epochs", "schedule", "weight_decay"} <= set(allowed) and "epoch" not in allowed


def test_wrong_type_and_impossible_values_each_get_their_own_line() -> None:
    text = TINY.replace("batch_size: 32", "batch_size: many").replace("cpu: 1", "cpu: 0")
    lines = problems(text)
    assert len(lines) == 2
    assert lines[0].startswith("s.yaml:4: data.batch_size: ") and "integer" in lines[0]
    assert lines[1].startswith("s.yaml:16: resources.cpu: ") and "greater than 0" in lines[1]


@pytest.mark.parametrize("replace, expected", [
    (("stages: [1, 2]", "stages: {range: [3, 1]}"), "s.yaml:13: space.stages"),
    (("growth: [4]", "depth: [4]"), "s.yaml:12: space: 'depth' is not a search dimension; allowed: "),
    (("seeds: [0]", "seeds: [0]\nsearch:\n  algorithm: optuna"),
     "s.yaml:19: search.algorithm: 'optuna' is not allowed; allowed: 'grid', 'random', 'tpe', 'multi_objective'"),
    (("seeds: [0]", "seeds: [0]\nbudgets:\n  max_params: lots"), "s.yaml:19: budgets.max_params: 'lots' is not a count"),
    (("seeds: [0]", "seeds: [0]\nsearch:\n  algorithm: random"), "num_samples: required for algorithm random"),
])
def test_impossible_values(replace: tuple[str, str], expected: str) -> None:
    [line] = problems(TINY.replace(*replace))
    assert expected in line and line.startswith("s.yaml:")


@pytest.mark.parametrize("override, expected", [
    ("train.epochs", "--set train.epochs: write key.path=value"),
    ("train.epochs=abc", "--set train.epochs: train.epochs: "),
    ("name.x=1", "--set name.x: name is not a section"),
    ("train.epoch=2", "--set train.epoch: train.epoch: unknown field 'epoch'; allowed: "),
])
def test_bad_set_is_blamed_on_the_option(override: str, expected: str) -> None:
    [line] = problems(TINY, [override])
    assert line.startswith(expected)


def test_set_overrides_the_file_and_is_kept_in_the_text() -> None:
    study, text = loads(TINY, overrides=["train.epochs=3", "data.batch_size=16"])
    assert study.train.epochs == 3 and study.data.batch_size == 16
    assert text.startswith(TINY) and "--set train.epochs=3 --set data.batch_size=16" in text


def test_bad_file_prints_error_lines_and_writes_no_database(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the study's default storage is sqlite:///rksearch.db in the cwd
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("  epochs: 1\n", "  epochs: 1\n  epoch: 3\n").replace("cpu: 1", "cpu: -1"))
    db = tmp_path / "x.db"
    assert run.main([str(path), "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {path}:9: train.epoch: " + err[0].split(": train.epoch: ")[1]
    assert err[1].startswith(f"error: {path}:17: resources.cpu: ")  # one line lower: epoch: was added
    assert len(err) == 2 and "Traceback" not in capsys.readouterr().err
    assert not db.exists() and not (tmp_path / "rksearch.db").exists()
    assert run.main([str(tmp_path / "missing.yaml")]) == 2
    assert list(tmp_path.iterdir()) == [path]


def test_dry_run_prints_every_trial_and_creates_no_database(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(TINY.replace("growth: [4]", "growth: [4, 6]"))
    assert run.main([str(path), "--dry-run", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.strip()[:1].isdigit() and "ERKNet" in line]
    assert len(rows) == 4  # stages x growth
    for stages in ("1x1 1x1", "2x1 2x1"):
        for k in (4, 6):
            [row] = [r for r in rows if f"ERKNet-{stages} " in r and f"growth={k} " in r]
            params, gflops = row.split(f"growth={k}")[-1].split()[1:3]
            assert params.endswith("M") and float(params[:-1]) > 0 and float(gflops) > 0
    assert out[-1] == "4 trials planned: 4 to train, 0 skipped"
    assert list(tmp_path.iterdir()) == [path]


# ---- the plan -----------------------------------------------------------------------------------

def test_budget_skips_trials_over_max_params_but_keeps_their_cost() -> None:
    small, large = sorted(plan(TINY), key=lambda t: t.assignment["stages"])
    assert small.cost.params < large.cost.params  # two stages per period have more weights than one
    budget = (small.cost.params + large.cost.params) // 2
    kept, skipped = sorted(plan(TINY + f"budgets:\n  max_params: {budget}\n"), key=lambda t: t.assignment["stages"])
    assert kept.runnable and kept.key == small.key
    assert not skipped.runnable and "max_params" in skipped.problem
    assert skipped.cost == large.cost and skipped.key == large.key


def test_budget_suffixes_read_as_counts() -> None:
    assert all(t.runnable for t in plan(TINY + "budgets:\n  max_params: 1M\n  max_flops: 2G\n"))
    assert not any(t.runnable for t in plan(TINY + "budgets:\n  max_params: 0.1k\n"))


def test_repeated_values_give_one_trial() -> None:
    assert len(plan(TINY.replace("growth: [4]", "growth: [4, 4]"))) == 2
    assert len(plan(TINY, ["seeds=[0, 0]"])) == 2


def test_a_name_and_the_equivalent_fields_are_the_same_trial() -> None:
    [by_fields] = plan(TINY.replace("stages: [1, 2]", "stages: [2]"))
    named = TINY.replace("model:\n  periods: 2\n  steps: 1\n", "").replace("stages: [1, 2]", "name: ['ERKNet-2x1 2x1']")
    [by_name] = plan(named)
    assert by_name.runnable and by_name.key == by_fields.key and by_name.cost == by_fields.cost
    [other_seed] = plan(named, ["seeds=[1]"])
    assert other_seed.key != by_name.key  # the seed changes the result, so it is a different trial


def test_grid_is_the_product_times_seeds() -> None:
    trials = plan(TINY.replace("growth: [4]", "growth: [4, 6, 8]"), ["seeds=[0, 1]"])
    assert len(trials) == 2 * 3 * 2
    assert {(t.assignment["stages"], t.assignment["growth"], t.seed) for t in trials} == {
        (s, k, seed) for s in (1, 2) for k in (4, 6, 8) for seed in (0, 1)}


def test_random_draws_num_samples() -> None:
    text = TINY.replace("growth: [4]", "growth: [4]\n  lr: {loguniform: [0.001, 0.1]}")
    trials = plan(text, ["search.algorithm=random", "search.num_samples=5"])
    assert len(trials) == 5 and len({t.key for t in trials}) == 5
    assert all(0.001 <= t.assignment["lr"] <= 0.1 and t.config["optim"]["lr"] == t.assignment["lr"] for t in trials)
    assert problems(text) == [problems(text)[0]] and "continuous" in problems(text)[0]  # a grid cannot


# ---- never a traceback --------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(-2, 2, allow_nan=False),
                     st.sampled_from(["", "x", "grid", "asha", "1.5M", "explicit", "digits", "synthetic", "[1"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.sampled_from(
                                                               ["values", "range", "type", "x", "uniform"]),
                                                               inner, max_size=2)), max_leaves=6)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a parsed document (list items by index)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, prefix + (i,))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = yaml.safe_load(TINY)
    doc["search"] = {"algorithm": "grid"}
    doc["scheduler"] = {"type": "fifo"}
    doc["budgets"] = {"max_params": "1M"}
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["delete", "change", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "change":
            parent[path[-1]] = draw(_values)
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["bogus", "epochs", "per_period", "seed"]))] = draw(_values)
        doc = copy.deepcopy(doc)
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated())
def test_mutated_studies_load_or_fail_cleanly(text: str, tmp_path: Path, capsys) -> None:
    try:
        loads(text, source="m.yaml")
    except StudyError as exc:
        assert exc.problems and all(p.startswith(("m.yaml", "--set")) for p in exc.problems)
    path = tmp_path / "m.yaml"
    path.write_text(text)
    db = tmp_path / "m.db"
    assert run.main([str(path), "--dry-run", "--storage", f"sqlite:///{db}"]) in (0, 2)
    assert not db.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(line.startswith("error: ") for line in err.splitlines())


# ---- hostile files: refused in one line, in bounded time and memory ------------------------------

#: the whole refusing process may peak at this, its torch import (~0.8 GB) included
REFUSAL_MEMORY = int(1.5 * 2**30)
#: the child's data-segment ceiling: a regression dies of MemoryError here instead of taking the machine
CHILD_DATA_CEILING = 4 * 2**30
REPO = Path(__file__).resolve().parents[1]


def laughs(names: str = "abcdefghi", width: int = 10) -> list[str]:
    """The "billion laughs": `name: &name [...]` lines, each ten aliases of the one before (10^9 values)."""
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
    for before, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{', '.join([f'*{before}'] * width)}]")
    return lines


#: the same bomb as one flow value, for --set
FLOW_LAUGHS = "[" + ", ".join(line.split(": ", 1)[1] for line in laughs()) + "]"

ALIAS_BOMBS = {
    "description": "name: bomb\ndescription:\n" + "".join(f"  {line}\n" for line in laughs()),
    "space": "name: bomb\n" + "".join(f"{line}\n" for line in laughs()) + "space:\n  stages: *i\n",
    "model": "name: bomb\n" + "".join(f"{line}\n" for line in laughs()) + "model: *i\n",
}


def run_cli(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str, str, int]:
    """``python -m rksearch.run ARGS`` as a real process in `cwd`: exit status, stdout, stderr, peak RSS in bytes.

    The peak is the child's own rusage from wait4 (RUSAGE_CHILDREN keeps the largest child so far,
    not this one); its data segment is capped and it is killed after `timeout`, so a regression
    fails this test instead of hanging the suite or exhausting the machine.
    """
    def cap_data() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)  # a ceiling above the hard limit would be refused
        ceiling = CHILD_DATA_CEILING if hard == resource.RLIM_INFINITY else min(CHILD_DATA_CEILING, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (ceiling, ceiling))

    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-m", "rksearch.run", *args], cwd=cwd, env=env,
                                 stdout=out, stderr=err, preexec_fn=cap_data)
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return child.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss * 1024  # Linux: KiB


def assert_refused_in_one_line(args: list[str], tmp_path: Path) -> str:
    """The CLI exits 2 with one error line, no output, and starts nothing (no database in its cwd)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    status, out, err, peak = run_cli(args, cwd)
    assert status == 2, err[-2000:]
    assert out == "" and "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith(f"error: {args[0]}")
    assert peak < REFUSAL_MEMORY, f"peak {peak / 2**30:.2f} GiB"
    assert not list(cwd.iterdir())
    return line


@pytest.mark.parametrize("placement, mode", [("description", ["--dry-run"]), ("space", []), ("model", ["--dry-run"])])
def test_alias_bomb_file_is_refused_in_one_line_with_bounded_memory(placement: str, mode: list[str],
                                                                    tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMBS[placement])
    line = assert_refused_in_one_line([str(path), *mode], tmp_path)
    assert re.match(rf"error: {re.escape(str(path))}:\d+: this value holds more than 100,000 values once YAML "
                    r"aliases \(&anchor / \*alias\) are expanded", line)


@pytest.mark.parametrize("content, mode", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), ["--dry-run"]),
    (random.Random(12).randbytes(4096), []),
])
def test_binary_file_is_refused_in_one_line(content: bytes, mode: list[str], tmp_path: Path) -> None:
    path = tmp_path / "picture.yaml"
    path.write_bytes(content)
    line = assert_refused_in_one_line([str(path), *mode], tmp_path)
    with pytest.raises(UnicodeDecodeError) as undecodable:
        content.decode("utf-8")
    offset = undecodable.value.start  # 0 for the PNG signature's 0x89
    assert line == (f"error: {path}: not a text file: byte 0x{content[offset]:02x} at offset {offset} is not UTF-8; "
                    "a study file is YAML text")


def test_alias_bomb_is_refused_at_the_first_value_that_expands_too_far() -> None:
    [line] = problems("name: bomb\n" + "".join(f"{line}\n" for line in laughs()))
    # a..d hold 11, 111, 1111, 11111 values; e (line 6) is the first past the cap
    assert line == (f"s.yaml:6: this value holds more than {MAX_EXPANDED_VALUES:,} values once YAML aliases "
                    "(&anchor / *alias) are expanded; a whole study has a few hundred, so it is refused")


def test_alias_bomb_in_a_set_override_is_blamed_on_the_option() -> None:
    [line] = problems(TINY, [f"description={FLOW_LAUGHS}"])
    assert line.startswith(f"--set description: this value holds more than {MAX_EXPANDED_VALUES:,} values")


def test_overrides_that_together_make_the_study_too_large_are_refused() -> None:
    half = "[" + ", ".join(["0"] * (MAX_EXPANDED_VALUES // 2)) + "]"
    assert loads(TINY, overrides=[f"seeds={half}"])[0].seeds == [0] * (MAX_EXPANDED_VALUES // 2)
    [line] = problems(TINY, [f"seeds={half}", f"description={half}"])
    assert line.startswith(f"s.yaml: with its --set overrides the study holds more than {MAX_EXPANDED_VALUES:,} values")


@pytest.mark.parametrize("text, expected", [
    ("name: loop\nseeds: &seeds [0, *seeds]\n", "s.yaml:2: this value contains itself through a YAML alias"),
    ("name: deep\ndescription: " + "[" * sys.getrecursionlimit() + "]" * sys.getrecursionlimit() + "\n",
     "s.yaml: the document nests too deeply to read"),
    ("", "s.yaml: the study file is empty"),
    ("# only a comment\n", "s.yaml: the study file is empty"),
])
def test_documents_that_cannot_be_a_study_get_one_line(text: str, expected: str) -> None:
    [line] = problems(text)
    assert line.startswith(expected)


def test_ordinary_aliases_still_load_and_errors_keep_their_lines() -> None:
    aliased = TINY.replace("  stages: [1, 2]\n  growth: [4]\n", "  stages: &sizes [1, 2]\n  growth: *sizes\n")
    assert {(t.assignment["stages"], t.assignment["growth"]) for t in plan(aliased)} == {(1, 1), (1, 2), (2, 1), (2, 2)}
    text = aliased + "scheduler: &fifo\n  type: fifo\nsearch: *fifo\nbudgets:\n  max_params: lots\n"
    search, budgets = problems(text)
    assert search.startswith("s.yaml:20: search.type: unknown field 'type'")  # the alias's line: the one to fix
    assert budgets.startswith("s.yaml:22: budgets.max_params: 'lots' is not a count")


@pytest.mark.parametrize("content, expected", [
    ("name: x\x00y\n", "not valid YAML: unacceptable character #x0000"),
    ("", "the study file is empty"),
    (None, "cannot read the study file (Is a directory)"),
])
def test_unreadable_study_paths_get_one_line(content: str | None, expected: str, tmp_path: Path, monkeypatch,
                                             capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.mkdir() if content is None else path.write_text(content)
    assert run.main([str(path), "--dry-run"]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert captured.out == "" and line.startswith(f"error: {path}: {expected}")
    assert list(tmp_path.iterdir()) == [path]


# ---- the trial key hashes the runtime as resolved ------------------------------------------------

def _key(*overrides: str) -> str:
    study, _ = loads(TINY, overrides=list(overrides))
    return Planner(study).plan()[0].key


def test_trial_keys_hash_the_resolved_precision_device_and_determinism() -> None:
    cpu_auto = _key()
    # on a CPU trial 'auto' *is* fp32: the same computation, the same key
    assert _key("runtime.amp=off") == cpu_auto and _key("runtime.device=cpu") == cpu_auto
    assert _key("runtime.amp=bf16") != cpu_auto  # another precision: another result
    assert _key("runtime.deterministic=true") != cpu_auto
    # a trial given a GPU computes in bf16 on CUDA: not the CPU trial's result
    gpu_auto = _key("resources.gpu=1")
    assert gpu_auto != cpu_auto
    assert _key("resources.gpu=1", "runtime.amp=off") not in (gpu_auto, cpu_auto)
    # how fast or where the data is read changes nothing that is computed
    assert _key("runtime.threads=3") == cpu_auto
    assert _key("runtime.compile=on") == _key("runtime.compile=auto") == _key("runtime.memory_efficient=true") == cpu_auto


def test_planned_configs_carry_the_resolved_device_and_precision_and_the_layout_as_written() -> None:
    study, _ = loads(TINY, overrides=["resources.gpu=1"])
    runtime = Planner(study).plan()[0].config["runtime"]
    assert (runtime["device"], runtime["channels_last"], runtime["deterministic"]) == ("cuda", "auto", False)
    assert runtime["amp"] in ("bf16", "fp16")  # fp16 only where the driver's own GPU lacks bf16
    study, _ = loads(TINY)
    runtime = Planner(study).plan()[0].config["runtime"]
    assert (runtime["device"], runtime["amp"], runtime["channels_last"]) == ("cpu", "off", "auto")


def test_channels_last_on_by_default_leaves_every_trial_key_as_it_was() -> None:
    """'auto' now trains channels-last on the CPU too; the keys of trials already in databases
    must not change with it, or a resumed study would train them again.  These are the keys
    this tiny study had before (TINY's first trial, computed by the code at 0fb4641)."""
    assert _key() == _key("runtime.channels_last=false") == "6f0d22527e016167a0dc15332f393674"
    assert _key("runtime.channels_last=true") == "9fe6900aa061884f80a3432729fdaf48"
    gpu = ("resources.gpu=1", "runtime.amp=bf16")  # bf16 stated: 'auto' is fp16 on a driver GPU without it
    assert _key(*gpu) == _key(*gpu, "runtime.channels_last=true") == "f14599fdb1e1f6d4eca397ff86a01b6d"
    assert _key(*gpu, "runtime.channels_last=false") == "22747e1664f8a39ed4dc470afa0b90a7"



@pytest.mark.parametrize("overrides, says", [
    (["runtime.amp=fp16"], "runtime.amp: fp16 needs CUDA"),
    (["runtime.device=cuda"], "runtime.device: cuda, but resources.gpu is 0"),
])
def test_runtimes_that_could_only_fail_at_run_time_are_refused_before(overrides: list[str], says: str) -> None:
    assert any(says in line for line in problems(TINY, overrides))
