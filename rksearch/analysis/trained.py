"""The model a trial chose, back from its checkpoint: load it, re-evaluate it, export it.

Every completed trial keeps two checkpoints, the best epoch's by validation and the last
(`results.load` columns `best_checkpoint`, `last_checkpoint`), and its full config.  From those:

    >>> model = load_model("sqlite:///rksearch.db", "quickstart", 7)             # nn.Module, eval mode
    >>> evaluate("sqlite:///rksearch.db", "quickstart", 7, split="test")         # re-measures test_acc
    >>> export("sqlite:///rksearch.db", "quickstart", 7, "state_dict", Path("m.pt"))  # + m.json

The model is rebuilt from the stored name and knobs with the stem and number of classes the
trial had, without reading its data set (ImageNet's class count, which only its folders know,
is read off the checkpoint's classifier).  ``which="best"`` gives the weights `test_acc` was
measured on, ``"last"`` those of `test_acc_final`; `evaluate` reproduces either exactly on the
same data, because it reads the same batches in the precision the trial used.

A study's checkpoint directory (``<storage path>/<study>``, holding ``run-*/``) may move with
its results: ``checkpoint_root=DIR`` (CLI ``--checkpoints DIR``) names where it is now and
replaces the recorded one in every path.  Every way this can fail raises `ModelError` with one
line that says what to do.

Nothing heavy is imported until used: `rksearch.results` re-exports `load_model` and stays quick.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rksearch.analysis.values import missing
from rksearch.store.db import StoreError
from rksearch.training.status import TrialStatus

if TYPE_CHECKING:
    from torch import nn

    from rksearch.training.config import TrialConfig

Which = Literal["best", "last"]
Split = Literal["test", "val"]
#: the model formats of `export` (the table formats are `results`' own)
FORMATS = ("state_dict", "onnx")
#: what the ONNX export needs besides torch: its exporter (torch.export + onnxscript) and onnx
ONNX_MODULES = ("onnx", "onnxscript")
#: version of the JSON spec `export` writes beside a model
SPEC_FORMAT = 1
#: ONNX protobufs cannot exceed 2 GiB: weights above this go to a `.data` file beside the model
_ONNX_INLINE_BYTES = 1 << 30


class ModelError(StoreError):
    """A trial's model cannot be loaded, evaluated or exported; the message says why, in one line."""


@dataclass
class Trained:
    """A trial's model with what it came from."""

    model: nn.Module
    config: TrialConfig
    trial: dict[str, Any]  # the trial's row of `results.load(..., detail=True)`
    which: Which
    epoch: int  # the epoch whose weights these are
    checkpoint: Path  # the checkpoint directory they were read from
    num_classes: int
    stem: str

    @property
    def recorded_test_acc(self) -> float:
        """The test accuracy stored for these weights (`test_acc` or `test_acc_final`)."""
        return _float(self.trial["test_acc" if self.which == "best" else "test_acc_final"])

    @property
    def recorded_val_acc(self) -> float:
        """The validation accuracy stored for these weights (`best_val_acc` or `final_val_acc`)."""
        return _float(self.trial["best_val_acc" if self.which == "best" else "final_val_acc"])


def load_model(url: str, study: str, trial_id: int | str, which: Which = "best", *,
               checkpoint_root: str | Path | None = None, device: str = "cpu") -> nn.Module:
    """The nn.Module trial `trial_id` of `study` chose, in eval mode, with the weights of its
    ``"best"`` checkpoint (validation's choice: the weights of `test_acc`) or ``"last"`` one
    (the final weights: `test_acc_final`), on `device`.

    `trial_id` is the `trial_id` of `results.load` (or a trial key).  `checkpoint_root`: the
    directory that now holds the study's ``run-*/`` checkpoint folders, if they moved.
    Raises `ModelError` (a `StoreError`) with one line saying what is wrong.
    """
    return load(url, study, trial_id, which, checkpoint_root=checkpoint_root, device=device).model


def load(url: str, study: str, trial_id: int | str, which: Which = "best", *,
         checkpoint_root: str | Path | None = None, device: str = "cpu") -> Trained:
    """`load_model`, with the trial's config, row, epoch and checkpoint kept beside the model."""
    import torch

    from rksearch.store import queries
    from rksearch.training import checkpoint as ckpt

    if which not in ("best", "last"):
        raise ModelError(f"which must be 'best' or 'last', not {which!r}")
    row = _trial_row(queries.load(url, study, status=None, detail=True), study, trial_id)
    cfg = _config(row, study)
    directory = _checkpoint_dir(row, study, which, checkpoint_root)
    name = f"trial {row['trial_id']} of study {study!r}"
    try:
        state = ckpt.load(directory, map_location="cpu")
    except FileNotFoundError:
        raise ModelError(f"{name}: {directory} holds no {ckpt.CHECKPOINT_NAME} (deleted?); "
                         f"nothing to load the {which} model from") from None
    except ckpt.UnreadableCheckpoint as exc:
        raise ModelError(f"{name}: {exc}") from None
    if which == "best":
        epoch = state["best_epoch"]
        weights = state["best_model"] if state["best_model"] is not None else state["model"]
        expected = row["best_epoch"]
    else:
        epoch, weights, expected = state["epoch"], state["model"], row["epochs"]
    if not missing(expected) and int(expected) != int(epoch):
        raise ModelError(f"{name}: the checkpoint in {directory} holds epoch {epoch}, but the trial's "
                         f"{which} epoch is {int(expected)}: it is not this trial's {which} checkpoint")
    stem, num_classes = _stem_and_classes(cfg, weights)
    model = _build(cfg, stem, num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(f"{name}: the weights in {directory} do not fit {cfg.model.name}: "
                         f"{first[-1].strip() if first else exc}") from None
    model.to(torch.device(device)).eval()
    return Trained(model, cfg, row, which, int(epoch), directory, num_classes, stem)


def evaluate(url: str, study: str, trial_id: int | str, split: Split = "test", which: Which = "best", *,
             checkpoint_root: str | Path | None = None, device: str = "cpu", data_root: str | Path | None = None,
             threads: int | None = None) -> dict[str, Any]:
    """Re-evaluate a trial's model on its own `split` (`"test"`, or `"val"`: the validation
    split, a holdout drawn again from its `split_seed`), on `device`.

    The trial's data config and resolved runtime are used as they were (batches, precision,
    memory format and, for a CPU trial, its thread count), the device aside: on the same data
    and device type, the accuracy equals the stored one (`recorded`).  `data_root` replaces
    `data.root` when the data set lives elsewhere now.  Returns a JSON-ready dict: trial, split,
    which, epoch, accuracy, loss, samples, recorded (the stored accuracy, None if none).
    """
    from rksearch.training.loop import evaluate as evaluate_model
    from rksearch.training.runtime import activated

    if split not in ("test", "val"):
        raise ModelError(f"split must be 'test' or 'val', not {split!r}")
    trained = load(url, study, trial_id, which, checkpoint_root=checkpoint_root, device="cpu")
    cfg = _with_data_root(trained.config, data_root)
    runtime = _runtime(trained, device, threads)
    model = trained.model.to(runtime.device, memory_format=runtime.memory_format)
    with activated(runtime):
        trial_data = _load_data(cfg, runtime.device)
        source = trial_data.test if split == "test" else trial_data.val
        loss, accuracy = evaluate_model(model, source, runtime)
    recorded = trained.recorded_test_acc if split == "test" else trained.recorded_val_acc
    return {"trial": int(trained.trial["trial_id"]), "split": split, "which": which, "epoch": trained.epoch,
            "accuracy": accuracy, "loss": loss, "samples": int(source.num_samples),
            "recorded": None if math.isnan(recorded) else recorded, "validation": cfg.data.validation,
            "device": runtime.describe()}


def spec(trained: Trained, mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """The JSON description written beside an exported model: how to rebuild it and feed it."""
    from rksearch import __version__

    cfg, row = trained.config, trained.trial
    size = cfg.data.size
    return {
        "format": SPEC_FORMAT,
        "study": row["study"], "trial_id": int(row["trial_id"]), "trial_key": row["trial_key"],
        "model_name": cfg.model.name, "canonical": row["canonical"], "knobs": cfg.model.knobs,
        "stem": trained.stem, "num_classes": trained.num_classes,
        "build": "rksearch.models.build(model_name, stem=stem, num_classes=num_classes, **knobs)",
        "params": sum(p.numel() for p in trained.model.parameters()),
        "input_shape": ["N", 3, size, size],
        "input": "float32 RGB images, per channel (pixel / 255 - mean) / std",
        "mean": list(mean), "std": list(std),
        "dataset": cfg.data.dataset, "validation": cfg.data.validation,
        "which": trained.which, "epoch": trained.epoch, "best_epoch": _int(row["best_epoch"]),
        "test_acc": _json_float(trained.recorded_test_acc),
        "trial_test_acc": _json_float(row["test_acc"]), "trial_test_acc_final": _json_float(row["test_acc_final"]),
        "best_val_acc": _json_float(row["best_val_acc"]),
        "code_version": row.get("code_version"), "exported_by": __version__,
        "config": cfg.model_dump(mode="json"),
    }


def export(url: str, study: str, trial_id: int | str, fmt: str, output: Path, which: Which = "best", *,
           checkpoint_root: str | Path | None = None) -> list[Path]:
    """Write a trial's model to `output` as `fmt` ("state_dict": ``torch.save`` of its weights,
    loadable with ``weights_only=True``; "onnx": through ``torch.onnx.export``, with a dynamic
    batch size), and its spec (`spec`) beside it as ``<output minus suffix>.json``.

    ONNX needs the ``onnx`` extra (``pip install 'rksearch[onnx]'``).  Returns the files written.
    """
    import torch

    if fmt not in FORMATS:
        raise ModelError(f"model format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    output = Path(output)
    spec_path = output.with_suffix(".json")
    if spec_path == output:
        raise ModelError(f"{output}: the spec goes to <name>.json beside the model; give the model another suffix "
                         f"(.pt, .onnx)")
    if fmt == "onnx":
        _need_onnx()
    if not output.parent.is_dir():
        raise ModelError(f"cannot write {output}: {output.parent} is not a directory")
    trained = load(url, study, trial_id, which, checkpoint_root=checkpoint_root, device="cpu")
    mean, std = normalisation(trained.config)
    written = [output, spec_path]
    if fmt == "state_dict":
        torch.save(trained.model.state_dict(), output)
    else:
        size = trained.config.data.size
        example = (torch.zeros(2, 3, size, size),)
        big = sum(t.numel() * t.element_size() for t in trained.model.state_dict().values()) > _ONNX_INLINE_BYTES
        try:
            torch.onnx.export(trained.model, example, str(output), dynamo=True, verbose=False, external_data=big,
                              input_names=["images"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        except Exception as exc:  # the exporter's failures are many and wordy: one line, the cause kept
            lines = str(exc).strip().splitlines()
            raise ModelError(f"ONNX export of {trained.config.model.name} failed: {type(exc).__name__}: "
                             f"{lines[0] if lines else ''}") from exc
        if big:
            written.insert(1, output.with_name(output.name + ".data"))
    spec_path.write_text(json.dumps(spec(trained, mean, std), indent=2) + "\n")
    return written


def normalisation(cfg: TrialConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std), in [0, 1] pixel units, that the trial normalised with: the
    fixed ones of CIFAR/SVHN/ImageNet, or those `rksearch.training.data` measured on its training split
    (digits, synthetic: in memory, read again here)."""
    from rksearch.training import data as data_mod

    fixed = data_mod.NORMALISATION.get(cfg.data.dataset)
    if fixed is not None:
        return fixed
    trial_data = _load_data(cfg, "cpu")
    return data_mod._measure(trial_data.train.images)  # what `data.load` normalised with


# ---- pieces ------------------------------------------------------------------------------


def _trial_row(frame: Any, study: str, trial_id: int | str) -> dict[str, Any]:
    """The row of trial `trial_id` (a trial id, or a trial key) that can have a model."""
    text = str(trial_id).strip()
    match = frame[(frame["trial_id"] == int(text)) if text.isdigit() else (frame["trial_key"] == text)]
    if match.empty and text.isdigit():  # a trial key of digits only
        match = frame[frame["trial_key"] == text]
    if match.empty:
        ids = frame["trial_id"].tolist()
        known = f"its trials are {ids[0]}..{ids[-1]}" if ids else "it has no trials"
        raise ModelError(f"study {study!r} has no trial {text} ({known}; see python -m rksearch.results show {study})")
    row = match.iloc[0].to_dict()
    if row["status"] != TrialStatus.COMPLETED:
        error = row.get("error")
        why = f": {error.strip().splitlines()[-1][:120]}" if isinstance(error, str) and error.strip() else ""
        raise ModelError(f"trial {row['trial_id']} of study {study!r} is {row['status']}{why}; "
                         f"only a completed trial has a chosen model")
    return row


def _config(row: dict[str, Any], study: str) -> TrialConfig:
    from pydantic import ValidationError

    from rksearch.training.config import TrialConfig

    config = row.get("config")
    if not isinstance(config, dict) or not config:
        raise ModelError(f"trial {row['trial_id']} of study {study!r} has no stored config to rebuild its model from "
                         f"(recorded before rksearch stored one)")
    try:
        return TrialConfig.model_validate(config)
    except ValidationError as exc:
        raise ModelError(f"trial {row['trial_id']} of study {study!r}: its stored config no longer validates "
                         f"({exc.errors()[0]['msg']} at {'.'.join(map(str, exc.errors()[0]['loc']))})") from None


def _checkpoint_dir(row: dict[str, Any], study: str, which: Which, root: str | Path | None) -> Path:
    """The trial's `which` checkpoint directory, moved under `root` if given; it must exist."""
    name = f"trial {row['trial_id']} of study {study!r}"
    recorded = row.get(f"{which}_checkpoint")
    if not isinstance(recorded, str) or not recorded:
        raise ModelError(f"{name} has no {which} checkpoint recorded (trained before rksearch kept them, or "
                         f"reused from a trial that had none)")
    recorded_path = Path(recorded)
    old_root, tail = _split_root(recorded_path)
    if root is None:
        if recorded_path.is_dir():
            return recorded_path
        raise ModelError(f"{name}: its {which} checkpoint {recorded_path} does not exist; if the study's "
                         f"checkpoint directory {old_root} was moved, pass where it is now, the directory holding "
                         f"{tail.parts[0]}/ (checkpoint_root=DIR, or --checkpoints DIR)")
    root = Path(root).expanduser()
    # the study's directory, or the storage path above it (named as recorded: a reused copy's
    # checkpoints live under the study that trained them)
    candidates = [root / tail, root / old_root.name / tail]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ModelError(f"{name}: its {which} checkpoint is not under {root}: neither {candidates[0]} nor "
                     f"{candidates[1]} exists (recorded at {recorded_path}; checkpoint_root/--checkpoints must "
                     f"name the directory that holds {tail.parts[0]}/)")


def _split_root(path: Path) -> tuple[Path, Path]:
    """(the study's checkpoint directory, the rest) of a recorded checkpoint path
    ``<storage>/<study>/run-<time>/<trial>/checkpoint_<n>``; without a ``run-*`` part, the
    last three parts are the rest."""
    parts = path.parts
    runs = [i for i, part in enumerate(parts) if re.fullmatch(r"run-.+", part)]
    cut = runs[-1] if runs and runs[-1] > 0 else max(1, len(parts) - 3)
    return Path(*parts[:cut]), Path(*parts[cut:])


def _stem_and_classes(cfg: TrialConfig, weights: dict[str, Any]) -> tuple[str, int]:
    """The stem and number of classes the trial's model had, from its config (what
    `train.build_model` took from the data set); ImageNet's class count from the weights."""
    from rksearch.models.knobs import DATASETS
    from rksearch.training.data import CLASSES, stem_for

    d, knobs = cfg.data, cfg.model.knobs
    stem = knobs.get("stem", stem_for(d.size))
    if "num_classes" in knobs:
        return stem, int(knobs["num_classes"])
    if d.dataset == "synthetic":
        return stem, d.num_classes
    if d.dataset in CLASSES:
        return stem, CLASSES[d.dataset]
    # imagenet: as many classes as its train/ folders; the classifier's output says how many
    default = DATASETS[d.dataset][1]
    probe = _build(cfg, stem, default)
    from torch import nn

    linears = [(n, m) for n, m in probe.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        key = f"{linears[-1][0]}.weight"
        if key in weights and weights[key].ndim == 2:
            return stem, int(weights[key].shape[0])
    return stem, default


def _build(cfg: TrialConfig, stem: str, num_classes: int) -> nn.Module:
    from types import SimpleNamespace

    from rksearch.training.loop import build_model

    # build_model reads only these two of the data set, so the data set itself is never read;
    # memory_efficient only changes what backward recomputes: off, for inference and export
    cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"memory_efficient": False})})
    return build_model(cfg, SimpleNamespace(stem=stem, num_classes=num_classes))  # type: ignore[arg-type]


def _runtime(trained: Trained, device: str, threads: int | None) -> Any:
    """The trial's resolved runtime on `device`: its precision and memory format, and on the CPU
    the thread count it ran with (summation order, so the last bits of every logit, follow it)."""
    import torch

    from rksearch.training.runtime import resolve

    if device not in ("cpu", "cuda", "auto"):
        raise ModelError(f"device must be cpu, cuda or auto, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: torch sees no CUDA device here; use --device cpu")
    cfg = trained.config.runtime
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    update: dict[str, Any] = {"device": device}
    if cfg.amp == "fp16" and not on_gpu:
        update["amp"] = "off"  # fp16 autocast is CUDA only: the nearest the CPU computes
    if threads is not None:
        update["threads"] = threads
    elif cfg.threads is None:
        ran = re.match(r"cpu x(\d+)\b", str(trained.trial.get("device") or ""))
        if ran and not on_gpu:
            update["threads"] = int(ran.group(1))
    try:
        return resolve(cfg.model_copy(update=update))
    except RuntimeError as exc:
        raise ModelError(f"cannot evaluate on {device}: {exc}") from None


def _with_data_root(cfg: TrialConfig, data_root: str | Path | None) -> TrialConfig:
    if data_root is None:
        return cfg
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": Path(data_root).expanduser()})})


def _load_data(cfg: TrialConfig, device: Any) -> Any:
    from rksearch.training.data import DataError
    from rksearch.training.data import load as load_data

    try:
        return load_data(cfg.data, seed=cfg.seed, device=device)
    except DataError as exc:
        raise ModelError(f"{exc} (pass the data set's current root with data_root=, or --data-root DIR)") from None


def _need_onnx() -> None:
    import importlib.util

    absent = [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        raise ModelError(f"ONNX export needs the onnx extra: pip install 'rksearch[onnx]' "
                         f"(missing: {', '.join(absent)})")


def _float(value: Any) -> float:
    return math.nan if missing(value) else float(value)


def _int(value: Any) -> int | None:
    return None if missing(value) else int(value)


def _json_float(value: Any) -> float | None:
    f = _float(value)
    return None if math.isnan(f) else f


__all__ = ["ModelError", "Trained", "evaluate", "export", "load", "load_model", "normalisation", "spec"]
