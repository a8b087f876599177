"""Ablation statistics of a study as a Markdown table: per factor and level the mean accuracy
over seeds with a 95% bootstrap CI, and the paired difference against the base level.

    python analysis/ablation.py --storage sqlite:///rksearch.db --study attention_ablation \
        [--factor attention --factor multiscale] [--design ofat|grid] [-o ablation.md]

The base of each factor is its most common level (the base of a one-factor-at-a-time study);
levels with fewer than 2 seeds are flagged, never given an interval.  The same numbers drawn:
`python -m rksearch.plot ablation`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rksearch import analysis, results
from rksearch.store.db import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ablation statistics of a study.")
    parser.add_argument("--storage", default=results.DEFAULT_URL)
    parser.add_argument("--study", required=True)
    parser.add_argument("--factor", action="append", help="a factor to analyse (repeatable; default all varied)")
    parser.add_argument("--design", choices=("auto", "ofat", "grid"), default="auto")
    parser.add_argument("-o", "--output", type=Path, help="Markdown file (default stdout)")
    args = parser.parse_args(argv)
    try:
        stats = analysis.ablation(results.load(args.storage, args.study), factors=args.factor, design=args.design)
        text = analysis.ablation_markdown(stats)
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.write_text(text)
            print(f"wrote {args.output}")
    except (StoreError, ValueError, KeyError, OSError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
