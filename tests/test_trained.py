"""A trial's chosen model, back from its checkpoints: `load_model`, `evaluate`, `export`.

One real study runs once for the module (2 small RKCNNs on digits, 3 epochs, through Ray Tune
into SQLite, plus a third grid point over budget: recorded as skipped, never trained); every
test reads its database and checkpoints.  The learning rate is high on purpose: the validation
accuracy then wanders, so here at least one trial's best epoch is not its last and `which`
picks different weights (the checks hold either way).
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from raycluster import ray_cluster  # noqa: F401  (the module fixture)

from rksearch import results
from rksearch.analysis import trained
from rksearch.models import build
from rksearch.search.loader import loads
from rksearch.search.planner import Planner
from rksearch.store.schema import trials as trials_table
from rksearch.training import checkpoint
from rksearch.training.config import TrialConfig
from rksearch.training.data import Normalise
from rksearch.training.data import load as load_data
from rksearch.training.loop import evaluate
from rksearch.training.runtime import resolve

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
STUDY = """\
name: kept
data:
  dataset: digits
  batch_size: 16
  limit_train: 1000
  limit_val: 64
train:
  epochs: 3
  lr: 0.8
  schedule: step
model:
  periods: 2
  steps: 1
space:
  stages: [1]
  growth: [4, 6, 8]
resources:
  cpu: 1
seeds: [0]
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> dict:  # noqa: F811
    from rksearch.search.engine import run_study

    tmp = tmp_path_factory.mktemp("kept")
    spec, text = loads(STUDY)
    params = sorted(t.cost.params for t in Planner(spec).plan())
    spec, text = loads(STUDY + f"budgets:\n  max_params: {params[-1] - 1}\n")  # growth 8: skipped
    url = f"sqlite:///{tmp / 'kept.db'}"
    run_study(spec, text, storage_url=url, storage_path=str(tmp / "ck"), preflight=False, stream=io.StringIO())
    frame = results.load(url, "kept", status=None, detail=True)
    done = frame[frame.status == "completed"]
    assert len(done) == 2 and (frame.status == "skipped").sum() == 1, frame[["trial_id", "status", "error"]]
    return {"url": url, "tmp": tmp, "root": tmp / "ck" / "kept", "frame": frame, "done": done,
            "skipped": int(frame[frame.status == "skipped"].trial_id.iloc[0])}


def _test_split(config: dict):
    """The trial's own test split and resolved runtime, read the way the trial read them."""
    cfg = TrialConfig.model_validate(config)
    runtime = resolve(cfg.runtime)
    return load_data(cfg.data, seed=cfg.seed, device=runtime.device), runtime


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = results.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- load_model ---------------------------------------------------------------------------


def test_load_model_reproduces_the_stored_test_accuracies(study: dict) -> None:
    """which=best gives the weights of test_acc, which=last those of test_acc_final, exactly."""
    for row in study["done"].itertuples():
        data, runtime = _test_split(row.config)
        for which, stored in (("best", row.test_acc), ("last", row.test_acc_final)):
            model = results.load_model(study["url"], "kept", row.trial_id, which)
            assert isinstance(model, torch.nn.Module) and not model.training
            _, accuracy = evaluate(model, data.test, runtime)
            assert accuracy == stored, (row.trial_id, which)


def test_best_and_last_are_the_checkpoints_tune_kept(study: dict) -> None:
    differ = 0
    for row in study["done"].itertuples():
        best = trained.load(study["url"], "kept", row.trial_id, "best")
        last = trained.load(study["url"], "kept", row.trial_id, "last")
        assert (best.epoch, last.epoch) == (row.best_epoch, row.epochs) and row.epochs == 3
        assert best.checkpoint == Path(row.best_checkpoint) and last.checkpoint == Path(row.last_checkpoint)
        same = all(torch.equal(a, b) for a, b in zip(best.model.state_dict().values(),
                                                     last.model.state_dict().values()))
        assert same == (row.best_epoch == row.epochs)
        differ += not same
    # the trial key also finds the trial
    row = study["done"].iloc[0]
    assert trained.load(study["url"], "kept", row.trial_key).trial["trial_id"] == row.trial_id
    print(f"{differ} of {len(study['done'])} trials chose an earlier epoch than their last")


@pytest.mark.parametrize(
    "args, says",
    [
        (("nope", 1), "no study named 'nope'"),
        (("kept", 999), "study 'kept' has no trial 999"),
    ],
)
def test_load_model_unknown_study_or_trial(study: dict, args: tuple, says: str) -> None:
    with pytest.raises(results.ModelError if "trial" in says else results.StoreError, match=says):
        results.load_model(study["url"], *args)


def test_a_trial_that_did_not_complete_has_no_model(study: dict) -> None:
    with pytest.raises(trained.ModelError, match=r"is skipped: over budget.*only a completed trial has a chosen model"):
        results.load_model(study["url"], "kept", study["skipped"])


def test_no_checkpoint_recorded(study: dict, tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(study["url"].removeprefix("sqlite:///"), db)
    trial = int(study["done"].trial_id.iloc[0])
    with sqlite3.connect(db) as conn:  # as a database from before checkpoints were recorded
        conn.execute(f"UPDATE {trials_table.name} SET best_checkpoint = NULL WHERE id = ?", (trial,))
    with pytest.raises(trained.ModelError, match=f"trial {trial} of study 'kept' has no best checkpoint recorded"):
        results.load_model(f"sqlite:///{db}", "kept", trial)
    assert results.load_model(f"sqlite:///{db}", "kept", trial, "last") is not None


def test_a_moved_checkpoint_directory_names_the_path_and_can_be_relocated(study: dict, tmp_path: Path,
                                                                          capsys) -> None:
    row = study["done"].iloc[-1]
    url, root = study["url"], study["root"]
    elsewhere = tmp_path / "archive"
    shutil.move(root, elsewhere / "kept")
    try:
        with pytest.raises(trained.ModelError) as error:
            results.load_model(url, "kept", row.trial_id)
        message = str(error.value)
        assert "\n" not in message
        assert f"best checkpoint {row.best_checkpoint} does not exist" in message
        assert f"checkpoint directory {root} was moved" in message and "--checkpoints DIR" in message
        # where the study's directory is now, or the storage directory above it: both are found
        for new_root in (elsewhere / "kept", elsewhere):
            model = results.load_model(url, "kept", row.trial_id, checkpoint_root=new_root)
            data, runtime = _test_split(row.config)
            assert evaluate(model, data.test, runtime)[1] == row.test_acc
        with pytest.raises(trained.ModelError, match=f"not under {tmp_path}: neither .* exists"):
            results.load_model(url, "kept", row.trial_id, checkpoint_root=tmp_path)
        code, out, err = _cli(capsys, "evaluate", "kept", "--trial", str(row.trial_id), "--json", "--storage", url,
                              "--checkpoints", str(elsewhere / "kept"))
        assert code == 0 and json.loads(out)["accuracy"] == row.test_acc
        code, out, err = _cli(capsys, "evaluate", "kept", "--trial", str(row.trial_id), "--storage", url)
        assert code == 2 and err.count("\n") == 1 and str(row.best_checkpoint) in err
    finally:
        shutil.move(elsewhere / "kept", root)


def test_an_unreadable_checkpoint_says_why(study: dict, tmp_path: Path) -> None:
    row = study["done"].iloc[0]
    copy = tmp_path / "kept"
    shutil.copytree(study["root"], copy)
    _, tail = trained._split_root(Path(row.best_checkpoint))
    damaged = copy / tail / checkpoint.CHECKPOINT_NAME
    damaged.write_bytes(damaged.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(trained.ModelError, match=f"checkpoint {damaged} is unreadable \\(truncated"):
        results.load_model(study["url"], "kept", row.trial_id, checkpoint_root=copy)


# ---- evaluate -----------------------------------------------------------------------------


def test_evaluate_json_reproduces_test_acc(study: dict) -> None:
    """The real command line: one JSON object on stdout, its accuracy the stored test_acc."""
    row = study["done"].iloc[0]
    out = subprocess.run([sys.executable, "-m", "rksearch.results", "evaluate", "kept", "--trial", str(row.trial_id),
                          "--split", "test", "--json", "--storage", study["url"]],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert out.stdout.count("\n") == 1
    assert {"trial": got["trial"], "split": got["split"], "which": got["which"]} == \
        {"trial": row.trial_id, "split": "test", "which": "best"}
    assert got["accuracy"] == got["recorded"] == row.test_acc and got["samples"] == 360


@pytest.mark.parametrize("split, which, column", [("test", "last", "test_acc_final"), ("val", "best", "best_val_acc"),
                                                  ("val", "last", "final_val_acc")])
def test_evaluate_reproduces_every_stored_accuracy(study: dict, capsys, split: str, which: str, column: str) -> None:
    """The validation split is the trial's holdout again (its split_seed): best_val_acc comes back."""
    for row in study["done"].itertuples():
        code, out, err = _cli(capsys, "evaluate", "kept", "--trial", str(row.trial_id), "--split", split,
                              "--which", which, "--json", "--storage", study["url"])
        assert code == 0, err
        got = json.loads(out)
        assert got["accuracy"] == getattr(row, column) and got["split"] == split and got["which"] == which
        assert got["samples"] == (360 if split == "test" else 64)


def test_evaluate_prints_one_readable_line(study: dict, capsys) -> None:
    row = study["done"].iloc[0]
    code, out, _ = _cli(capsys, "evaluate", "kept", "--trial", str(row.trial_id), "--storage", study["url"])
    assert code == 0 and out.count("\n") == 1
    assert out.startswith(f"trial {row.trial_id}, best checkpoint (epoch {row.best_epoch}), test split: accuracy ")


# ---- export -------------------------------------------------------------------------------


def test_export_state_dict_reloads_weights_only_into_a_fresh_model(study: dict, tmp_path: Path, capsys) -> None:
    row = study["done"].iloc[-1]
    weights = tmp_path / "model.pt"
    code, _, err = _cli(capsys, "export", "kept", "--trial", str(row.trial_id), "--format", "state_dict",
                          "-o", str(weights), "--storage", study["url"])
    assert code == 0, err
    spec = json.loads((tmp_path / "model.json").read_text())
    assert {k: spec[k] for k in ("study", "trial_id", "trial_key", "which", "epoch", "test_acc", "dataset")} == {
        "study": "kept", "trial_id": row.trial_id, "trial_key": row.trial_key, "which": "best",
        "epoch": row.best_epoch, "test_acc": row.test_acc, "dataset": "digits"}
    assert spec["stem"] == "cifar" and spec["num_classes"] == 10 and spec["input_shape"] == ["N", 3, 32, 32]

    fresh = build(spec["model_name"], stem=spec["stem"], num_classes=spec["num_classes"], **spec["knobs"])
    fresh.load_state_dict(torch.load(weights, weights_only=True))
    fresh.eval()
    data, _ = _test_split(row.config)
    images, _ = next(data.test.batches(0))
    # the spec's mean and std are the trial's normalisation: raw pixels through them give its batches
    assert torch.allclose(Normalise(spec["mean"], spec["std"], torch.device("cpu"))(data.test.images[:len(images)]),
                          images, atol=1e-5)
    stored = results.load_model(study["url"], "kept", row.trial_id)
    with torch.no_grad():
        assert torch.equal(fresh(images), stored(images))

    code, _, _ = _cli(capsys, "export", "kept", "--trial", str(row.trial_id), "--which", "last", "-o",
                      str(tmp_path / "last.pt"), "--storage", study["url"])  # state_dict is the default
    assert code == 0 and json.loads((tmp_path / "last.json").read_text())["test_acc"] == row.test_acc_final


def test_export_onnx_matches_pytorch_on_a_batch(study: dict, tmp_path: Path, capsys) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra (pip install -e '.[onnx]') is not installed")
    row = study["done"].iloc[0]
    path = tmp_path / "model.onnx"
    code, out, err = _cli(capsys, "export", "kept", "--trial", str(row.trial_id), "--format", "onnx",
                          "-o", str(path), "--storage", study["url"])
    assert code == 0, err
    assert out == f"wrote {path}, {tmp_path / 'model.json'}\n"
    model = results.load_model(study["url"], "kept", row.trial_id)
    data, _ = _test_split(row.config)
    images, _ = next(data.test.batches(0))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (images, images[:5]):  # the batch size is dynamic
        with torch.no_grad():
            expected = model(batch).numpy()
        got = session.run(["logits"], {"images": batch.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4


def test_onnx_without_the_extra_says_how_to_install_it(study: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(trained, "ONNX_MODULES", ("onnx", "no_such_module_onnxscript"))
    code, _, err = _cli(capsys, "export", "kept", "--trial", str(study["done"].trial_id.iloc[0]), "--format", "onnx",
                        "-o", str(tmp_path / "m.onnx"), "--storage", study["url"])
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'rksearch[onnx]'" in err and "no_such_module_onnxscript" in err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["export", "kept", "--trial", "1", "--format", "csv"], "--format csv exports the whole study's table"),
        (["export", "kept", "--format", "onnx", "-o", "m.onnx"], "--format onnx exports one trial's model: give"),
        (["export", "kept", "--format", "state_dict"], "give --trial ID"),
        (["export", "kept", "--which", "last"], "--which pick a trial's model: give --trial ID"),
        (["export", "kept", "--trial", "1"], "give the model's file with -o"),
        (["export", "kept", "--trial", "1", "-o", "spec.json"], "the spec goes to <name>.json"),
        (["export", "kept", "--trial", "999", "-o", "m.pt"], "study 'kept' has no trial 999"),
        (["evaluate", "kept", "--trial", "999"], "study 'kept' has no trial 999"),
        (["evaluate", "nope", "--trial", "1"], "no study named 'nope'"),
    ],
)
def test_bad_combinations_exit_2_with_one_line(study: dict, tmp_path: Path, monkeypatch, capsys, argv: list[str],
                                               says: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, *argv, "--storage", study["url"])
    assert code == 2 and says in err and err.startswith("error: ") and err.count("\n") == 1 and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_evaluate_a_skipped_trial(study: dict, capsys) -> None:
    code, _, err = _cli(capsys, "evaluate", "kept", "--trial", str(study["skipped"]), "--storage", study["url"])
    assert code == 2 and "is skipped" in err and err.count("\n") == 1


def test_results_still_imports_without_torch_or_ray() -> None:
    code = "import sys, rksearch.results; sys.exit(bool({'ray', 'torch'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0
