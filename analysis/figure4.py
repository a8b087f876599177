"""Regenerate the paper's Figure 4 from a study database, and list its Pareto front.

    python analysis/figure4.py --storage sqlite:///rksearch.db --study quickstart \
        -o docs/img/quickstart_figure4.png [--reference published.csv] [--by form] [--linear]

Draws the figure with `rksearch.plots.figure4` (the same code as `python -m rksearch.plot
figure4`) and prints the study's Pareto front by FLOPs as a Markdown table, the numbers a
caption or README quotes beside the picture.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rksearch import analysis, plots, results
from rksearch.pareto import pareto
from rksearch.store.db import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Figure-4-style plot of a study.")
    parser.add_argument("--storage", default=results.DEFAULT_URL)
    parser.add_argument("--study", required=True)
    parser.add_argument("--reference", type=Path, help="CSV of published points: family,name,params,flops,error")
    parser.add_argument("--by", help="series column (default: model family)")
    parser.add_argument("--linear", action="store_true", help="linear cost axes (default log)")
    parser.add_argument("-o", "--output", type=Path, default=Path("figure4.png"), help=".png, .pdf or .svg")
    args = parser.parse_args(argv)
    try:
        frame = results.load(args.storage, args.study)
        reference = None if args.reference is None else plots.read_reference(args.reference)
        figure = plots.figure4(frame, by=args.by, log=not args.linear, reference=reference, title=args.study)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.output, dpi=200)
        front = pareto(analysis.replicates(frame), x="flops", y="error")
    except (StoreError, ValueError, KeyError, OSError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}\n\nPareto front by FLOPs (seeds averaged):\n")
    print(front.assign(GFLOPs=front["flops"] / 1e9, params_M=front["params"] / 1e6, error_pct=100 * front["error"])
          [["family", "model_name", "GFLOPs", "params_M", "error_pct", "seeds"]]
          .to_markdown(index=False, floatfmt=".3g"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
