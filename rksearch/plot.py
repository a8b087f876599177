"""``rksearch plot figure4|curves|pareto|ablation|importance|parallel|contour|history --study NAME -o out.png``

Draws a study's results straight from the database: a thin layer over `rksearch.results`
(read), `rksearch.analysis` (statistics) and `rksearch.analysis.plots` (drawing), importing
neither Ray nor a GUI backend, so it runs on a laptop with only the database file.  The Optuna
kinds (importance, parallel, contour, history) are Optuna's own plots of the Optuna study kept
in the same database (`rksearch.analysis.optuna_plots`), imported only when asked for, so the
other kinds never import Optuna.  Any problem with the inputs is one line on stderr and exit
status 2.  ``python -m rksearch.plot`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure

from rksearch import analysis, cli, results
from rksearch.analysis import plots

#: the command's name in its usage line when run as a module (`rksearch.cli` passes its own)
PROG = "python -m rksearch.plot"

#: output formats matplotlib writes without extra software
FORMATS = (".png", ".pdf", ".svg")

#: what each kind of plot draws
KINDS = {
    "figure4": "the paper's Figure 4, error vs params and vs FLOPs with Pareto fronts",
    "curves": "validation error per epoch, one line per trial",
    "pareto": "every trial's metric against a cost, with the front",
    "ablation": "each factor level's paired difference from its base, with intervals",
    "importance": "each search dimension's share of the objective's variance (fANOVA, optuna.importance)",
    "parallel": "every completed trial as a line through its dimensions and objective (Optuna)",
    "contour": "the objective over each pair of search dimensions (Optuna)",
    "history": "each trial's objective in the order it ran, with the best so far (Optuna)",
}

#: the kinds drawn by Optuna from the study's Optuna mirror (`rksearch.analysis.optuna_plots`)
OPTUNA_KINDS = ("importance", "parallel", "contour", "history")

EPILOG = """examples:
  rksearch plot figure4 --study quickstart -o figure4.png
  rksearch plot figure4 --study quickstart --reference published.csv --linear -o figure4.pdf
  rksearch plot curves --study quickstart --by growth -o curves.svg
  rksearch plot pareto --study quickstart --x params --y test_acc -o pareto.png
  rksearch plot ablation --study attention_ablation --by attention -o ablation.png
  rksearch plot importance --study quickstart -o importance.png      # also prints the importances
  rksearch plot parallel --study quickstart -o parallel.pdf
  rksearch plot contour --study quickstart -o contour.png
  rksearch plot history --study pareto_search --objective 1 -o history.png   # its 2nd objective (FLOPs)
"""


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw a study's results straight from the database, without Ray or a display.\n\nkinds:\n"
                    + "\n".join(f"  {kind:<{max(map(len, KINDS))}} {what}" for kind, what in KINDS.items()),
    )  # fmt: skip
    parser.add_argument("kind", choices=KINDS, metavar="KIND", help=f"what to draw: {', '.join(KINDS)}")
    cli.add_storage(parser)
    parser.add_argument("--study", metavar="NAME", required=True, help="the study to draw")
    parser.add_argument("--by", metavar="DIM", help="series/colour dimension (figure4, curves, pareto; default: "
                        "model family) or the one factor to chart (ablation)")  # fmt: skip
    parser.add_argument("--reference", type=Path, metavar="CSV",
                        help="figure4: CSV of published points (family,name,params,flops,error)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--log", dest="log", action="store_true", default=None,
                       help="log scale for the cost/metric axis")
    scale.add_argument("--linear", dest="log", action="store_false", help="linear axes")
    parser.add_argument("--x", default="flops", metavar="COLUMN",
                        help="pareto: cost column (flops, params, macs; default flops)")
    parser.add_argument("--y", default=plots.DEFAULT_METRIC, metavar="METRIC",
                        help=f"figure4, pareto: the metric, mean over seeds (default {plots.DEFAULT_METRIC}, the "
                        "reporting one; test_acc, or best_val_error for a database without test numbers)")  # fmt: skip
    parser.add_argument("--objective", type=int, metavar="N",
                        help="importance, parallel, contour, history: which objective of a multi-objective study "
                        "(0, the first, by default)")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", required=True,
                        help="output file: .png, .pdf or .svg")
    return parser


def draw_optuna(args: argparse.Namespace) -> Figure:
    """An Optuna kind: Optuna's plot of the study's Optuna mirror; says which objective it shows
    (and, for importance, prints the importances it drew)."""
    import matplotlib

    from rksearch.analysis import optuna_plots

    matplotlib.use("agg")  # Optuna draws through pyplot: off-screen here, as the other kinds are
    study = optuna_plots.optuna_study(args.storage, args.study)
    objective = optuna_plots.study_objective(study, args.objective)
    if objective.count > 1:
        print(f"objective: {objective.describe()}; --objective N picks another")
    if args.kind == "importance":
        ranked = optuna_plots.param_importances(study, objective)
        print("importance (fANOVA): " + ", ".join(f"{name} {value:.3f}" for name, value in ranked.items()))
    return optuna_plots.optuna_figure(study, args.kind, objective)


def draw(args: argparse.Namespace) -> Figure:
    """The figure `args` ask for (raises ValueError/KeyError/StoreError on bad inputs)."""
    if args.kind in OPTUNA_KINDS:
        return draw_optuna(args)
    title = args.study
    if args.kind == "curves":
        return plots.curves(results.load_epochs(args.storage, args.study), by=args.by, log=args.log, title=title)
    frame = results.load(args.storage, args.study)
    if frame.empty:
        raise ValueError(f"study {args.study!r} has no completed trials yet")
    if args.kind == "figure4":
        reference = None if args.reference is None else plots.read_reference(args.reference)
        return plots.figure4(frame, by=args.by, error=args.y, log=args.log, reference=reference, title=title)
    if args.kind == "pareto":
        return plots.pareto_plot(frame, x=args.x, y=args.y, by=args.by, log=args.log, title=title)
    stats = analysis.ablation(frame, factors=None if args.by is None else [args.by])
    note = analysis.selection_note(frame)
    return plots.ablation_chart(stats, title=f"{title} ({note})" if note else title)


@cli.exits_on_error(*cli.INPUT_ERRORS)
def main(argv: list[str] | None = None, *, prog: str = PROG) -> int:
    args = _parser(prog).parse_args(argv)
    if args.output.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot write {args.output}: the output must end in one of {', '.join(FORMATS)}")
    if args.reference is not None and args.kind != "figure4":
        raise ValueError("--reference only applies to figure4")
    if args.objective is not None and args.kind not in OPTUNA_KINDS:
        raise ValueError(f"--objective only applies to {', '.join(OPTUNA_KINDS)}")
    figure = draw(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=200, bbox_inches="tight")  # Optuna's legends sit outside the axes
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
