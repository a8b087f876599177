"""Study results as pandas DataFrames, straight from the SQL store, without Ray.

The database is the source of truth, so this is how results are read a year later on another
machine: `load` (one row per trial), `load_epochs` (one row per epoch), `studies`, `pareto`,
`load_model` (a trial's chosen model, `rksearch.analysis.trained`), and a small CLI:

    rksearch results ls
    rksearch results show STUDY
    rksearch results export STUDY [--format csv|parquet|markdown] [-o FILE]
    rksearch results export STUDY --trial ID --format state_dict|onnx -o FILE [--which best|last]
    rksearch results evaluate STUDY --trial ID [--split test|val] [--which best|last] [--json]

(``python -m rksearch.results`` is the same command).  Every command takes ``--storage URL``
(default ``$RKSEARCH_STORAGE``, else ``sqlite:///rksearch.db``); `evaluate` and the model
exports take ``--checkpoints DIR`` when the study's checkpoint directory has moved.  The reads
themselves live in `rksearch.store.queries`: each runs in one read-only transaction, so a
running study is neither blocked nor seen half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from rksearch import cli
from rksearch.analysis.pareto import pareto
from rksearch.analysis.trained import FORMATS as MODEL_FORMATS
from rksearch.analysis.trained import ModelError, load_model
from rksearch.store import compute
from rksearch.store.db import StoreError
from rksearch.store.queries import load, load_epochs, studies, study_compute
from rksearch.store.urls import DEFAULT_URL
from rksearch.training import failures

#: columns `show` leaves out to fit a terminal (errors are 1 - the accuracies it shows)
_NOT_SHOWN = ("trial_key", "canonical", "macs", "error", "node", "code_version", "started_at", "finished_at",
              "best_checkpoint", "last_checkpoint")


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


#: the command's name in its usage line when run as a module (`rksearch.cli` passes its own)
PROG = "python -m rksearch.results"

#: what `export` writes without --trial
TABLE_FORMATS = ("csv", "parquet", "markdown")

EPILOG = """examples:
  rksearch results ls
  rksearch results show quickstart --storage sqlite:///rksearch.db
  rksearch results export quickstart --format markdown -o quickstart.md
  rksearch results export quickstart --trial 7 --format onnx -o model.onnx
  rksearch results evaluate quickstart --trial 7 --split test
"""


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    cli.add_storage(common)
    one_study = argparse.ArgumentParser(add_help=False, parents=[common])
    one_study.add_argument("study", help="the study's name (`ls` lists them)")
    model = argparse.ArgumentParser(add_help=False)  # what picks one trial's model
    model.add_argument("--which", choices=("best", "last"), default=None,
                       help="the best epoch's checkpoint by validation (default) or the last one")
    model.add_argument("--checkpoints", type=Path, metavar="DIR",
                       help="where the study's checkpoint directory (holding run-*/) is now, if it moved")
    parser = argparse.ArgumentParser(prog=prog, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Read a study's results from the database: list the studies,\n"
                                                 "show or export a study's trials, export or re-evaluate a "
                                                 "trial's model.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, what: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=parents, help=what, description=what[0].upper() + what[1:] + ".")

    command("ls", "list the studies with their trial counts by status, the study each replayed, and the "
                  "compute each spent (epochs, training FLOPs, CPU/GPU hours, what ASHA saved)", [common])
    command("show", "a study's trials, one line each, with why a trial failed or was skipped, then its compute",
            [one_study])
    export = command("export", "write a study's trials to a file, or with --trial one trial's model",
                     [one_study, model])
    export.add_argument("--trial", metavar="ID", help="a trial id (or key): export its model")
    export.add_argument("--format", choices=TABLE_FORMATS + MODEL_FORMATS, default=None,
                        help="tables: csv (default), parquet, markdown; a trial's model: state_dict (default "
                             "with --trial), onnx (needs the onnx extra)")
    export.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="the file to write (a table goes to stdout without it; a model needs it)")
    evaluate = command("evaluate", "re-evaluate a trial's stored model on its test or validation split",
                       [one_study, model])
    evaluate.add_argument("--trial", metavar="ID", required=True, help="a trial id (or key)")
    evaluate.add_argument("--split", choices=("test", "val"), default="test", help="the split (default test)")
    evaluate.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="default cpu")
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


@cli.exits_on_error()
def main(argv: list[str] | None = None, *, prog: str = PROG) -> int:
    args = _parser(prog).parse_args(argv)
    if args.command == "ls":
        print(studies(args.storage).to_string(index=False))
    elif args.command == "show":
        frame = load(args.storage, args.study, status=None)
        frame["reason"] = frame["error"].map(_reason)
        columns = [c for c in frame.columns if c not in _NOT_SHOWN and not c.endswith(("_error", "_error_final"))]
        print(frame[columns].to_string(index=False))
        spent = compute.describe(study_compute(args.storage, args.study))
        if spent is not None:
            print(spent)
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
    return 0


__all__ = ["DEFAULT_URL", "ModelError", "load", "load_epochs", "load_model", "main", "pareto", "studies"]

if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... show STUDY | head`: the reader left; no traceback (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
