"""Regenerate the paper's Figure 4 from a study database, and list its Pareto front.

    python analysis/figure4.py --study quickstart -o docs/img/quickstart_figure4.png [--storage URL] \
        [--reference published.csv] [--by form] [--linear] \
        [--metric best_val_error]

Draws the figure with `rksearch.analysis.plots.figure4` (the same code as `rksearch plot
figure4`) and prints the study's Pareto front by FLOPs as a Markdown table, the numbers a
caption or README quotes beside the picture: test error per configuration as
"mean ± half-width (n)" over seeds, and how the models were selected ("selected on test" for
a study that set `validation: test`, the paper's protocol).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rksearch import analysis, cli, results
from rksearch.analysis import plots
from rksearch.analysis.pareto import pareto


@cli.exits_on_error(*cli.INPUT_ERRORS)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Figure-4-style plot of a study.")
    cli.add_storage(parser)
    parser.add_argument("--study", required=True)
    parser.add_argument("--reference", type=Path, help="CSV of published points: family,name,params,flops,error")
    parser.add_argument("--by", help="series column (default: model family)")
    parser.add_argument("--metric", default=plots.DEFAULT_METRIC,
                        help=f"error column, mean over seeds (default {plots.DEFAULT_METRIC}; best_val_error "
                        "for a database from before test metrics were recorded)")  # fmt: skip
    parser.add_argument("--linear", action="store_true", help="linear cost axes (default log)")
    parser.add_argument("-o", "--output", type=Path, default=Path("figure4.png"), help=".png, .pdf or .svg")
    args = parser.parse_args(argv)
    frame = results.load(args.storage, args.study)
    reference = None if args.reference is None else plots.read_reference(args.reference)
    figure = plots.figure4(frame, by=args.by, error=args.metric, log=not args.linear, reference=reference,
                           title=args.study)  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=200)
    rows = analysis.per_configuration(frame, [args.metric])
    front = pareto(rows.assign(**{args.metric: rows["mean"]}), x="flops", y=args.metric)
    note = analysis.selection_note(frame) or "selection not recorded"
    what = "test error" if args.metric == "test_error" else args.metric
    print(f"wrote {args.output}\n\nPareto front by FLOPs ({what} over seeds, {note}):\n")
    table = front.assign(
        GFLOPs=front["flops"] / 1e9,
        params_M=front["params"] / 1e6,
        **{f"{what} (%)": [analysis.pm_cell(m, h, n) for m, h, n in zip(front["mean"], front["half_width"], front["n"])]},
    )
    print(table[["family", "model_name", "GFLOPs", "params_M", f"{what} (%)"]]
          .to_markdown(index=False, floatfmt=".3g"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
