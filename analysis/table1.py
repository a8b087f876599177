"""Regenerate a Table-1-style table (model, GFLOPs, params, error per family) from a study.

    python analysis/table1.py --storage sqlite:///rksearch.db --study quickstart \
        -o docs/img/quickstart_table1.md        # or .tex (booktabs) or .csv; no -o: Markdown to stdout

Groups sit side by side as in the paper (ERKNets left, IRKNets right); `--by form` groups by
another column.  Errors are the mean over replicate seeds in percent, with the s.d. when any
model has two seeds or more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rksearch import analysis, results
from rksearch.store.db import StoreError

WRITERS = {".md": analysis.table_markdown, ".tex": analysis.table_latex, ".csv": analysis.table_csv}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Table-1-style table of a study.")
    parser.add_argument("--storage", default=results.DEFAULT_URL)
    parser.add_argument("--study", required=True)
    parser.add_argument("--by", default="family", help="column whose groups sit side by side (default family)")
    parser.add_argument("--error", default="val_error", choices=("val_error", "final_val_error"),
                        help="best-epoch (default) or last-epoch validation error")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, help="output file: .md, .tex or .csv")
    args = parser.parse_args(argv)
    try:
        suffix = ".md" if args.output is None else args.output.suffix.lower()
        if suffix not in WRITERS:
            raise ValueError(f"cannot write {args.output}: the output must end in one of {', '.join(WRITERS)}")
        frame = results.load(args.storage, args.study)
        if frame.empty:
            raise ValueError(f"study {args.study!r} has no completed trials yet")
        text = WRITERS[suffix](analysis.paper_table(frame, by=args.by, error=args.error))
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text)
            print(f"wrote {args.output}")
    except (StoreError, ValueError, KeyError, OSError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
