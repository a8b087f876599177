"""``python -m rksearch.run STUDY.yaml``: validate, plan, train, record, summarise.

Thin by design: parse arguments, load the study, hand it to `rksearch.api.execute` (the path
`rksearch.run_study` takes from Python), print the summary.  Exit status 0 when every trial's results are in the database; 1 when a fault (a full
disk, a database that refuses writes, an internal error) left the study unfinished; 2 for a
bad study file / option / database / cluster, refused before anything trains (every
`rksearch.errors.RksearchError`); 130 when interrupted (Ctrl-C or SIGTERM).  Every failure
ends in one ``error:`` line, and every unfinished study in the exact command that continues it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rksearch.cli import STORAGE_ENV
from rksearch.errors import RksearchError
from rksearch.search.loader import StudyError, load
from rksearch.store.urls import redact
from rksearch.training.failures import last_line

if TYPE_CHECKING:
    from rksearch.search.engine import StudyRun
    from rksearch.search.schema import Study

EPILOG = """examples:
  python -m rksearch.run studies/quickstart.yaml
  python -m rksearch.run studies/stage_sweep.yaml --dry-run
  python -m rksearch.run studies/stage_sweep.yaml --set train.epochs=2 --set name=sweep-smoke
  python -m rksearch.run studies/stage_sweep.yaml --resume
  python -m rksearch.run STUDY.yaml --storage postgresql+psycopg://user@db/rksearch --address auto
  python -m rksearch.run studies/quickstart.yaml --replay quickstart --set name=qs-asha --set scheduler.type=asha
      (a replay: ASHA runs on the epochs study quickstart recorded; nothing trains)
"""


#: the command's name in its usage line when run as a module (`rksearch.cli` passes its own)
PROG = "python -m rksearch.run"


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="the study file (YAML)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a field of the study file (repeatable), e.g. train.epochs=2")
    ap.add_argument("--dry-run", action="store_true", help="print every planned trial with its params and FLOPs, then exit")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted study without re-running finished trials "
                    "(trials that failed from an infrastructure fault run again)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="with --resume: also run again the trials that failed for other reasons (diverged, errors)")
    ap.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, else the study's storage.url)")
    ap.add_argument("--storage-path", help="checkpoint directory every node can reach (default: storage.checkpoints)")
    ap.add_argument("--address", help="join a Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--replay", metavar="RECORDED",
                    help="train nothing: run the study's search, scheduler, budgets and dedup on the epochs study "
                         "RECORDED (same database) recorded for the same trial keys; points it lacks are skipped "
                         "('not in the recording'); the study is stored as a replay, with simulated compute")
    ap.add_argument("--no-preflight", action="store_true", help="skip the cluster/database checks before training")
    ap.add_argument("-v", "--verbose", action="store_true", help="log rksearch's own progress messages")
    return ap


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues the run `argv` started: every option it gave, ``--resume``
    once, ``--dry-run`` never, shell-quoted.  Rebuilt from the parsed options, so abbreviations
    (``--storage-p``) and ``--set=...`` spellings come out whole.  The interpreter is ``python``
    when that is the one running now, else its full path."""
    args = parser().parse_args(list(argv))
    found = shutil.which("python")
    python = "python" if found and os.path.abspath(found) == os.path.abspath(sys.executable) else (
        sys.executable or "python")
    words = [python, "-m", "rksearch.run"]
    if not args.study.startswith("-"):
        words.append(args.study)
    for override in args.overrides:
        words += ["--set", override]
    # a password is never printed: libpq takes it from PGPASSWORD or ~/.pgpass (`storage_hint`)
    storage = None if args.storage is None else redact(args.storage, connectable=True)
    for flag, value in (("--storage", storage), ("--storage-path", args.storage_path),
                        ("--address", args.address), ("--replay", args.replay)):
        if value is not None:
            words += [flag, value]
    words += (["--no-preflight"] * args.no_preflight + ["--verbose"] * args.verbose
              + ["--retry-failed"] * args.retry_failed + ["--resume"])
    if args.study.startswith("-"):
        words += ["--", args.study]
    return shlex.join(words)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, ``kill``, a container stopping), handled like Ctrl-C so the
    study is marked interrupted and the resume command printed before the process exits."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not break the clean-up
    raise Terminated()


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    signal.signal(signal.SIGTERM, _terminate)
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        study, text = load(args.study, args.overrides)
        if args.dry_run:
            return _dry_run(study)
        return _run(study, text, args, argv)
    except RksearchError as exc:  # a bad study file: refused before anything ran
        return _refused(exc)
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with  {resume_command(argv)}", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        return _crashed(exc)


def _dry_run(study: Study) -> int:
    """Print every trial the study would train, priced on this machine, and what happens to it."""
    from rksearch.api import planned_trials
    from rksearch.search.dryrun import describe

    trials = planned_trials(study)
    if study.search.algorithm not in ("grid", "random"):
        print(f"{study.search.algorithm}: {study.search.num_samples} trials chosen by Optuna while the "
              "study runs; a random sample of the space, priced:")
    print("\n".join(describe(trials)))
    runnable = sum(t.runnable for t in trials)
    print(f"{len(trials)} trials planned: {runnable} to train, {len(trials) - runnable} skipped")
    return 0


def _run(study: Study, text: str, args: argparse.Namespace, argv: list[str]) -> int:
    """Run the study and summarise it.  From here on the study may exist in the database, so
    every way out but a refused preflight names the command that continues it."""
    from rksearch.api import execute
    from rksearch.search.preflight import PreflightError
    from rksearch.search.replay import NoRecording

    hint = f"continue with  {resume_command(argv)}{_password_note(args.storage)}"
    if not args.verbose:  # Optuna's "A new study created in RDB ..." would interleave with our view
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        run, url = execute(study, text, storage=args.storage, storage_path=args.storage_path, address=args.address,
                           resume=args.resume, retry_failed=args.retry_failed, preflight=not args.no_preflight,
                           replay=args.replay)
        return _summarise(run, study, url, hint)
    except (PreflightError, NoRecording) as exc:  # refused before the study began: nothing to continue
        return _refused(exc)
    except RksearchError as exc:  # the database (or the data, a model) refused
        return _refused(exc, hint)
    except Exception as exc:
        if args.verbose:
            raise
        return _crashed(exc, hint)


def _password_note(storage: str | None) -> str:
    """What the resume command lacks when --storage held a password (it is never printed)."""
    if storage is None or redact(storage, connectable=True) == redact(storage):
        return ""
    return "  (the --storage password is left out: give it in PGPASSWORD or ~/.pgpass)"


def _summarise(run: StudyRun, study: Study, url: str, hint: str) -> int:
    """The end-of-study report and counts; the exit status the run earned (0, 1 or 130)."""
    from rksearch.analysis.report import study_summary
    from rksearch.store import StoreError

    print()
    try:
        print(study_summary(url, study.name, display_url=redact(url), tensorboard=run.tensorboard))
    except StoreError as exc:  # the study ran; only the report cannot be read now
        print(f"(no summary: {exc})")
    failed = f" ({run.failed} failed: `results show` says why)" if run.failed else ""
    done = f"replayed from study {run.replay_of}" if run.replay_of else "trained"
    print(f"\n{run.trained} {done}{failed}, {run.skipped} skipped, {run.reused} reused, "
          f"{run.already_done} done before; {time.strftime('%H:%M:%S', time.gmtime(run.seconds))} wall")
    if run.interrupted:
        print(f"interrupted: {hint}", file=sys.stderr)
        return 130
    if not run.complete:
        why = run.fatal or f"{len(run.problems)} trials lack their results: " + "; ".join(run.problems[:3]) + (
            "; ..." if len(run.problems) > 3 else "")
        print(f"error: {why}; study {study.name} is not complete: {hint}", file=sys.stderr)
        return 1
    return 0


def _refused(exc: RksearchError, hint: str | None = None) -> int:
    """Exit status 2: `exc` as ``error:`` lines (a study file's, one per problem), `hint` ending the last."""
    problems = list(exc.problems) if isinstance(exc, StudyError) else str(exc).splitlines() or [type(exc).__name__]
    if hint:
        problems[-1] += f"; {hint}"
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


def _crashed(exc: Exception, hint: str | None = None) -> int:
    """Exit status 1: an unexpected error in one line (``-v`` shows its traceback), then `hint`."""
    then = f"; {hint}" if hint else ""
    print(f"error: {type(exc).__name__}: {last_line(str(exc)) or 'no message'} "
          f"(run with -v for the traceback){then}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
