"""Regenerate a Table-1-style table (model, GFLOPs, params, error per family) from a study.

    python analysis/table1.py --study quickstart -o docs/img/quickstart_table1.md [--storage URL]

`-o` may also end in .tex (booktabs) or .csv; without it the Markdown goes to stdout.

Groups sit side by side as in the paper (ERKNets left, IRKNets right); `--by form` groups by
another column.  Each error cell reads "mean ± half-width (n)": the mean over the n replicate
seeds in percent and the half-width of its 95% confidence interval (Student-t; none for one
seed).  The default is the test error of the checkpoint the validation metric chose
(`--metric test_error`); a caption says on which split the models were selected ("selected on
test (the paper's protocol)" for studies that select on the test set).  A database from before
test metrics were recorded has none: pass `--metric best_val_error`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rksearch import analysis, cli, results

WRITERS = {".md": analysis.table_markdown, ".tex": analysis.table_latex, ".csv": analysis.table_csv}


@cli.exits_on_error(*cli.INPUT_ERRORS)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Table-1-style table of a study.")
    cli.add_storage(parser)
    parser.add_argument("--study", required=True)
    parser.add_argument("--by", default="family", help="column whose groups sit side by side (default family)")
    parser.add_argument("--metric", default="test_error",
                        choices=("test_error", "test_error_final", "best_val_error", "final_val_error"),
                        help="test error of the selected checkpoint (default), of the final weights, or the "
                             "best-epoch / last-epoch validation error")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, help="output file: .md, .tex or .csv")
    args = parser.parse_args(argv)
    suffix = ".md" if args.output is None else args.output.suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"cannot write {args.output}: the output must end in one of {', '.join(WRITERS)}")
    frame = results.load(args.storage, args.study)
    if frame.empty:
        raise ValueError(f"study {args.study!r} has no completed trials yet")
    text = WRITERS[suffix](analysis.paper_table(frame, by=args.by, metric=args.metric))
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
