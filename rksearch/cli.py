"""``rksearch run|cost|results|plot ...``: one command for the entry points, and what they share.

Each subcommand is its module's own ``main(argv, prog=...)``, so ``rksearch run --help`` is
``python -m rksearch.run --help``, examples included, but for the name its usage line gives
(``prog``: ``rksearch run`` here, the module's own spelling there), and both spellings keep
working.  A subcommand's module is imported only when it is named: ``rksearch --version`` and
``rksearch cost`` load neither Ray nor pandas.

What the commands share lives here too:

- `exits_on_error`: rksearch's own errors (`rksearch.errors.RksearchError`: a bad study,
  data, database or cluster), and whatever else a command names, become one ``error:`` line
  on stderr and exit status 2, never a traceback;
- `add_storage`: the ``--storage URL`` option of every command that reads a database, which
  defaults to ``$RKSEARCH_STORAGE`` and then to ``sqlite:///rksearch.db``, so a shell that
  exports the variable once (a container, a cluster job) needs no flag anywhere.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from rksearch import __version__
from rksearch.errors import RksearchError
from rksearch.store.urls import DEFAULT_URL, mask_in_text

#: subcommand -> what it does (its module is ``rksearch.<subcommand>``)
COMMANDS: dict[str, str] = {
    "run": "validate, plan and train a study file, recording every trial in the database",
    "cost": "params, FLOPs, MACs and training memory of a model by name, without building it",
    "results": "list studies, show or export their trials, export or re-evaluate a trial's model",
    "plot": "Figure 4, learning curves, Pareto fronts, ablations; Optuna's importance, parallel, contour, history",
}

#: the environment variable naming the database when --storage does not
STORAGE_ENV = "RKSEARCH_STORAGE"

#: what analysis and plotting raise for inputs they refuse, besides rksearch's own errors: a
#: metric or value the study cannot give (ValueError), a column it lacks (KeyError), a file that
#: cannot be read or written (OSError)
INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, KeyError, OSError)

#: a command's ``main(argv=None, *, prog=...)``: `prog` names the command in its usage line
Main = Callable[..., int]


def error_line(error: BaseException | str) -> str:
    """`error` as the one line a command prints: ``error: <message>``, without a password.

    A KeyError's message is its key's text (not its quoted repr); a message of several lines is
    joined with '; '.  The store's own messages mask passwords already (`rksearch.store.urls`);
    any URL that still carries one is masked here (`urls.mask_in_text`: the message's URL is
    unknown here), the last guard before a terminal or a CI log.
    """
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = "; ".join(lines) or type(error).__name__
    return "error: " + mask_in_text(text)


def fail(error: BaseException | str) -> int:
    """Print `error` as its `error_line` on stderr; the exit status of a refused command, 2."""
    print(error_line(error), file=sys.stderr)
    return 2


def exits_on_error(*also: type[Exception]) -> Callable[[Main], Main]:
    """Decorate a command's ``main(argv, prog=...)``: `RksearchError` and the errors in `also`
    end it with one ``error:`` line and exit status 2 (`fail`).  Anything else is a bug and
    keeps its traceback; argparse's own usage errors exit 2 before `main`'s body runs."""
    caught = (RksearchError, *also)

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def guarded(argv: Sequence[str] | None = None, **options: str) -> int:
            try:
                return main(argv, **options)
            except caught as exc:
                return fail(exc)

        return guarded

    return decorate


def add_storage(parser: argparse.ArgumentParser) -> None:
    """Add ``--storage URL``: the flag, else ``$RKSEARCH_STORAGE``, else ``sqlite:///rksearch.db``.

    The help names the variable, never its value, which may hold a password.
    """
    parser.add_argument("--storage", metavar="URL", default=os.environ.get(STORAGE_ENV) or DEFAULT_URL,
                        help=f"database URL (default: ${STORAGE_ENV}, else {DEFAULT_URL})")


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<8} {what}" for name, what in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="rksearch", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Architecture search and ablation studies over Runge-Kutta CNNs.",
        epilog=f"commands:\n{listing}\n\n'rksearch COMMAND --help' shows a command's options and examples;\n"
               f"'python -m rksearch.COMMAND' is the same command.",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"rksearch {__version__}")
    parser.add_argument("command", metavar="COMMAND", help=f"one of: {', '.join(COMMANDS)}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``rksearch COMMAND [ARGS...]``: hand ARGS to ``rksearch.COMMAND.main``, whose usage line
    then says ``rksearch COMMAND``, the way it was called."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return import_module(f"rksearch.{argv[0]}").main(argv[1:], prog=f"rksearch {argv[0]}")
    if not argv or argv[0].startswith("-"):
        _parser().parse_args(argv)  # --help and --version exit here, as does a missing command
    return fail(f"unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)} (rksearch --help)")


__all__ = ["COMMANDS", "INPUT_ERRORS", "STORAGE_ENV", "add_storage", "error_line", "exits_on_error", "fail", "main"]

if __name__ == "__main__":
    sys.exit(main())
