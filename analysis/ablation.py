"""Ablation statistics of a study as a Markdown table: per factor and level the mean over seeds
with its 95% CI, and the paired difference against the base level (matched by seed) with its t
interval, sign-flip permutation p-value (Holm-corrected across the compared levels), effect
size d_z and a verdict: higher, lower or inconclusive (the interval crosses zero).

    python analysis/ablation.py --study attention_ablation [--storage URL] \
        [--factor attention --factor multiscale] [--design ofat|grid] [--metric test_acc] [-o ablation.md]

The metric is the test accuracy of the checkpoint the validation metric chose (`--metric
test_acc`, the default); a database from before test metrics were recorded needs
`--metric best_val_acc`.  The base of each factor is its most common level (the base of a
one-factor-at-a-time study); levels with fewer than 2 seeds are flagged, never given an
interval.  The same numbers drawn: `rksearch plot ablation`.  `--storage` defaults to
$RKSEARCH_STORAGE, else sqlite:///rksearch.db; a bad input is one `error:` line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rksearch import analysis, cli, results


@cli.exits_on_error(*cli.INPUT_ERRORS)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ablation statistics of a study.")
    cli.add_storage(parser)
    parser.add_argument("--study", required=True)
    parser.add_argument("--factor", action="append", help="a factor to analyse (repeatable; default all varied)")
    parser.add_argument("--design", choices=("auto", "ofat", "grid"), default="auto")
    parser.add_argument("--metric", default="test_acc",
                        help="trial column to compare (default test_acc; best_val_acc for older databases)")
    parser.add_argument("-o", "--output", type=Path, help="Markdown file (default stdout)")
    args = parser.parse_args(argv)
    frame = results.load(args.storage, args.study)
    stats = analysis.ablation(frame, factors=args.factor, design=args.design, metric=args.metric)
    text = analysis.ablation_markdown(stats)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
