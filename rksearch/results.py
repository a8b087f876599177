"""Study results as pandas DataFrames, straight from the SQL store, without Ray.

The database is the source of truth, so this is how results are read a year later on another
machine: `load` (one row per trial), `load_epochs` (one row per epoch), `studies`, `pareto`,
`load_model` (a trial's chosen model, `rksearch.analysis.trained`), and a small CLI:

    python -m rksearch.results ls
    python -m rksearch.results show STUDY
    python -m rksearch.results export STUDY [--format csv|parquet|markdown] [-o FILE]
    python -m rksearch.results export STUDY --trial ID --format state_dict|onnx -o FILE [--which best|last]
    python -m rksearch.results evaluate STUDY --trial ID [--split test|val] [--which best|last] [--json]

(every command takes ``--storage URL``; `evaluate` and the model exports ``--checkpoints DIR``
when the study's checkpoint directory has moved).  Reads run in one read-only transaction, so
a running study is neither blocked nor seen half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rksearch.analysis.pareto import pareto
from rksearch.analysis.trained import FORMATS as MODEL_FORMATS
from rksearch.analysis.trained import ModelError, load_model
from rksearch.store import db
from rksearch.store.db import StoreError
from rksearch.store.schema import epochs, trials
from rksearch.store.schema import studies as studies_table
from rksearch.training import failures

DEFAULT_URL = "sqlite:///rksearch.db"

#: the per-trial columns before the search dimensions, and after them
_TRIAL_HEAD = ("study", "trial_id", "trial_key", "model_name", "canonical")
_TRIAL_TAIL = (
    "seed", "params", "flops", "macs", "validation", "best_epoch", "best_val_acc", "best_val_error",
    "final_val_acc", "final_val_error", "test_acc", "test_error", "test_acc_final", "test_error_final",
    "epochs", "wall_seconds", "status", "failure", "error", "device", "node", "code_version",
    "started_at", "finished_at", "reused_from", "best_checkpoint", "last_checkpoint",
)  # fmt: skip
#: columns `show` leaves out to fit a terminal (errors are 1 - the accuracies it shows)
_NOT_SHOWN = ("trial_key", "canonical", "macs", "error", "node", "code_version", "started_at", "finished_at",
              "best_checkpoint", "last_checkpoint")
#: what `load(detail=True)` adds at the end
_TRIAL_DETAIL = ("config", "environment")
#: `data.validation` of a trial whose config does not say: the default before revision 0004
_OLD_DEFAULT_VALIDATION = "test"
_EPOCH_TAIL = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_error", "lr", "seconds",
               "images_per_s")  # fmt: skip


@contextlib.contextmanager
def _snapshot(url: str) -> Iterator[Connection]:
    """A read-only snapshot of an existing database (never creates one for a mistyped path)."""
    engine = db.connect(url, create=False)
    try:
        with db.reading(engine) as conn:
            yield conn
    finally:
        engine.dispose()


def _study_filter(conn: Connection, study: str | None) -> sa.ColumnElement[bool]:
    """WHERE clause for one study by name (StoreError if it does not exist) or for all."""
    if study is None:
        return sa.true()
    found = conn.execute(sa.select(studies_table.c.id).where(studies_table.c.name == study)).scalar()
    if found is None:
        raise StoreError(f"no study named {study!r}")
    return trials.c.study_id == found


def _with_dims(frame: pd.DataFrame, head: tuple[str, ...], tail: tuple[str, ...]) -> pd.DataFrame:
    """Spread each trial's `dims` JSON into one column per search dimension, between head and tail.

    A dimension named like a fixed column (say `seed`) keeps its value under `<name>_dim`, so
    neither overwrites the other.  The dimension columns are listed in `attrs["dims"]`: which
    columns are search dimensions is known here and nowhere else, so analysis reads it from
    the frame instead of guessing from column names.
    """
    dims = pd.DataFrame(list(frame.pop("dims")), index=frame.index)
    dims = dims.rename(columns={c: f"{c}_dim" for c in dims.columns if c in head + tail})
    out = pd.concat([frame[list(head)], dims, frame[list(tail)]], axis=1)
    out.attrs["dims"] = [str(c) for c in dims.columns]
    return out


def _utc(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Timestamps as UTC-aware (SQLite hands them back naive, PostgreSQL aware)."""
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True)


def load(url: str = DEFAULT_URL, study: str | None = None, status: str | None = "completed",
         detail: bool = False) -> pd.DataFrame:
    """One row per trial of `study` (all studies if None) with `status` (all statuses if None).

    Validation selects, test reports, and each has its own name:
      - `validation`: the split that selected, "holdout" (of the training set) or "test"
        (the paper's protocol; trials recorded before rksearch kept a test set apart say "test");
      - `best_val_acc` (the selection metric, at `best_epoch`) and `final_val_acc` (the last epoch's);
      - `test_acc` (the test set on the best epoch's weights: the number to report) and
        `test_acc_final` (on the final weights), NaN for a trial that did not complete;
      - each `*_acc` has its `*_error` (1 - accuracy, a fraction).
    `failure` is a failed trial's category (`rksearch.training.failures`), `error` its error text or a
    skipped trial's reason; `best_checkpoint`/`last_checkpoint` the kept checkpoint directories
    (`load_model`).  With `detail`, `config` (the trial's full config) and `environment` (what its
    worker ran: code version, torch, CUDA, cuDNN, device, node) are added as dict columns.
    `attrs["dims"]` lists the search-dimension columns.
    """
    query = (
        sa.select(
            studies_table.c.name.label("study"), trials.c.id.label("trial_id"), trials.c.trial_key,
            trials.c.model_name, trials.c.canonical, trials.c.dims, trials.c.config, trials.c.seed,
            trials.c.params, trials.c.flops, trials.c.macs, trials.c.best_epoch, trials.c.best_val_acc,
            trials.c.final_val_acc, trials.c.test_acc, trials.c.test_acc_final,
            trials.c.epochs_done.label("epochs"), trials.c.wall_seconds, trials.c.status, trials.c.failure,
            trials.c.error, trials.c.device, trials.c.node, trials.c.code_version, trials.c.started_at,
            trials.c.finished_at, trials.c.reused_from_id.label("reused_from"), trials.c.best_checkpoint,
            trials.c.last_checkpoint, trials.c.environment,
        )
        .join(studies_table, studies_table.c.id == trials.c.study_id)
        .order_by(trials.c.id)
    )  # fmt: skip
    with _snapshot(url) as conn:
        query = query.where(_study_filter(conn, study))
        if status is not None:
            query = query.where(trials.c.status == status)
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(query.selected_columns.keys()))
    for accuracy in ("best_val_acc", "final_val_acc", "test_acc", "test_acc_final"):
        frame[accuracy] = frame[accuracy].astype(float)
        frame[accuracy.replace("_acc", "_error")] = 1.0 - frame[accuracy]
    frame["validation"] = [config["data"].get("validation", _OLD_DEFAULT_VALIDATION)
                           if isinstance(config, dict) and config.get("data") else None
                           for config in frame["config"]]
    for column in ("params", "flops", "macs", "reused_from", "best_epoch"):
        frame[column] = frame[column].astype("Int64")
    _utc(frame, ("started_at", "finished_at"))
    return _with_dims(frame, _TRIAL_HEAD, _TRIAL_TAIL + (_TRIAL_DETAIL if detail else ()))


def load_epochs(url: str = DEFAULT_URL, study: str | None = None) -> pd.DataFrame:
    """One row per recorded epoch of every trial of `study` (all studies if None).

    `attrs["dims"]` lists the search-dimension columns, as in `load`.
    """
    query = (
        sa.select(
            studies_table.c.name.label("study"), trials.c.id.label("trial_id"), trials.c.trial_key,
            trials.c.model_name, trials.c.dims, epochs.c.epoch, epochs.c.train_loss, epochs.c.train_acc,
            epochs.c.val_loss, epochs.c.val_acc, epochs.c.lr, epochs.c.seconds, epochs.c.images_per_s,
        )
        .join(trials, trials.c.id == epochs.c.trial_id)
        .join(studies_table, studies_table.c.id == trials.c.study_id)
        .order_by(trials.c.id, epochs.c.epoch)
    )  # fmt: skip
    with _snapshot(url) as conn:
        query = query.where(_study_filter(conn, study))
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(query.selected_columns.keys()))
    frame["val_error"] = 1.0 - frame["val_acc"].astype(float)
    return _with_dims(frame, ("study", "trial_id", "trial_key", "model_name"), _EPOCH_TAIL)


def studies(url: str = DEFAULT_URL) -> pd.DataFrame:
    """One row per study: name, status, times, code version and trial counts by status."""
    counts = {
        status: sa.func.count(trials.c.id).filter(trials.c.status == status).label(status)
        for status in ("completed", "pruned", "failed", "skipped", "running")
    }
    query = (
        sa.select(
            studies_table.c.name.label("study"), studies_table.c.id, studies_table.c.status,
            studies_table.c.created_at, studies_table.c.finished_at, studies_table.c.code_version,
            sa.func.count(trials.c.id).label("trials"), *counts.values(),
        )
        .outerjoin(trials, trials.c.study_id == studies_table.c.id)
        .group_by(studies_table.c.id)
        .order_by(studies_table.c.id)
    )  # fmt: skip
    with _snapshot(url) as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(query.selected_columns.keys()))
    _utc(frame, ("created_at", "finished_at"))
    return frame


# --------------------------------------------------------------------------- CLI


def _export(frame: pd.DataFrame, fmt: str, output: Path | None) -> str | None:
    """Write `frame` as `fmt` to `output`, or return the text for stdout."""
    if fmt == "parquet":
        if output is None:
            raise StoreError("parquet is binary: give an output file with -o")
        try:
            frame.to_parquet(output, index=False)
        except ImportError as exc:
            raise StoreError(f"parquet export needs pyarrow: {exc}") from None
        return None
    if fmt == "csv":
        text = frame.to_csv(index=False)
    else:
        try:
            text = frame.to_markdown(index=False) + "\n"
        except ImportError as exc:
            raise StoreError(f"markdown export needs tabulate: {exc}") from None
    if output is None:
        return text
    output.write_text(text)
    return None


def _reason(error: object) -> str:
    """Why a trial failed or was skipped, in one short line (None and NaN: no reason)."""
    return failures.last_line(error, 80) if isinstance(error, str) else ""


#: what `export` writes without --trial
TABLE_FORMATS = ("csv", "parquet", "markdown")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--storage", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    parser = argparse.ArgumentParser(prog="python -m rksearch.results", description="Read study results.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ls", parents=[common], help="list the studies")
    show = commands.add_parser("show", parents=[common], help="a study's trials")
    show.add_argument("study")
    model = argparse.ArgumentParser(add_help=False)  # what picks one trial's model
    model.add_argument("--which", choices=("best", "last"), default=None,
                       help="the best epoch's checkpoint by validation (default) or the last one")
    model.add_argument("--checkpoints", type=Path, metavar="DIR",
                       help="where the study's checkpoint directory (holding run-*/) is now, if it moved")
    export = commands.add_parser("export", parents=[common, model],
                                 help="write a study's trials to a file, or with --trial one trial's model")
    export.add_argument("study")
    export.add_argument("--trial", metavar="ID", help="a trial id (or key): export its model")
    export.add_argument("--format", choices=TABLE_FORMATS + MODEL_FORMATS, default=None,
                        help="tables: csv (default), parquet, markdown; a trial's model: state_dict (default "
                             "with --trial), onnx (needs the onnx extra)")
    export.add_argument("-o", "--output", type=Path)
    evaluate = commands.add_parser("evaluate", parents=[common, model],
                                   help="re-evaluate a trial's stored model on its test or validation split")
    evaluate.add_argument("study")
    evaluate.add_argument("--trial", metavar="ID", required=True, help="a trial id (or key)")
    evaluate.add_argument("--split", choices=("test", "val"), default="test")
    evaluate.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    evaluate.add_argument("--threads", type=int, metavar="N",
                          help="CPU threads (default: as many as the trial used)")
    evaluate.add_argument("--data-root", type=Path, metavar="DIR", help="where the data set is now, if not "
                                                                       "at the trial's data.root")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _export_model(args: argparse.Namespace) -> None:
    """`export --trial`: one trial's model as a state_dict or ONNX file, with its JSON spec."""
    from rksearch.analysis import trained

    if args.output is None:
        raise ModelError(f"--format {args.format} writes files: give the model's file with -o")
    written = trained.export(args.storage, args.study, args.trial, args.format, args.output, args.which or "best",
                             checkpoint_root=args.checkpoints)
    print(f"wrote {', '.join(map(str, written))}")


def _evaluate(args: argparse.Namespace) -> None:
    import json

    from rksearch.analysis import trained

    which = args.which or "best"
    out = trained.evaluate(args.storage, args.study, args.trial, args.split, which,
                           checkpoint_root=args.checkpoints, device=args.device, data_root=args.data_root,
                           threads=args.threads)
    if args.json:
        print(json.dumps(out))
        return
    recorded = "none" if out["recorded"] is None else f"{out['recorded']:.4f}"
    note = " (selected on test)" if out["validation"] == "test" else ""
    print(f"trial {out['trial']}, {which} checkpoint (epoch {out['epoch']}), {args.split} split{note}: "
          f"accuracy {out['accuracy']:.4f} on {out['samples']} images, loss {out['loss']:.4f} "
          f"(recorded: {recorded}; {out['device']})")


def _check_export(args: argparse.Namespace) -> None:
    """A table export takes no trial options; a model export needs its trial."""
    model_only = [flag for flag, value in (("--which", args.which), ("--checkpoints", args.checkpoints))
                  if value is not None]
    if args.trial is None:
        if args.format in MODEL_FORMATS:
            raise StoreError(f"--format {args.format} exports one trial's model: give --trial ID")
        if model_only:
            raise StoreError(f"{' and '.join(model_only)} pick a trial's model: give --trial ID and "
                             f"--format state_dict or onnx")
    elif args.format in TABLE_FORMATS:
        raise StoreError(f"--format {args.format} exports the whole study's table: drop --trial, or export "
                         f"the trial's model with --format state_dict or onnx")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ls":
            print(studies(args.storage).to_string(index=False))
        elif args.command == "show":
            frame = load(args.storage, args.study, status=None)
            frame["reason"] = frame["error"].map(_reason)
            columns = [c for c in frame.columns if c not in _NOT_SHOWN and not c.endswith(("_error", "_error_final"))]
            print(frame[columns].to_string(index=False))
        elif args.command == "evaluate":
            _evaluate(args)
        else:
            _check_export(args)
            if args.trial is not None:
                args.format = args.format or "state_dict"
                _export_model(args)
            else:
                text = _export(load(args.storage, args.study, status=None), args.format or "csv", args.output)
                if text is not None:
                    sys.stdout.write(text)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["load", "load_epochs", "studies", "pareto", "load_model", "ModelError", "main", "DEFAULT_URL"]

if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... show STUDY | head`: the reader left; no traceback (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
