"""The end-of-study summary printed by `python -m rksearch.run`.

Seeds are replicates: a configuration (everything but the seed) is ranked by its mean
validation accuracy over seeds (`best_val_acc`, the selection metric) and reported with its
costs and its test accuracy as "mean ± half-width (n)", the half-width of the confidence
interval of `rksearch.analysis.mean_ci` (left out for a single seed).  It says how the models
were selected: "selected on test" for a paper study that set `validation: test`, else
"selected on validation holdout".  Reads the database through `rksearch.store.queries.load`
only, so it imports neither Ray nor matplotlib.
"""

from __future__ import annotations

import shlex

from rksearch.analysis import frames, tables
from rksearch.store import compute, queries
from rksearch.training.status import TrialStatus


def study_summary(url: str, study: str, top: int = 5, level: float = 0.95, display_url: str | None = None,
                  tensorboard: str | None = None) -> str:
    """The end-of-study summary: trial counts, the protocol, and the best configurations.

    Header: the study's completed / pruned / failed / skipped counts (and any other status
    present) and how models were selected; then its compute (`store.compute.describe`: epochs,
    training FLOPs, CPU or GPU hours, what ASHA saved; simulated for a replay).  Then the `top` configurations by mean
    validation accuracy over seeds, one line each: the model name (with the search dimensions
    that tell configurations of one name apart), the validation mean, and the test accuracy as
    "mean ± half-width (n)" in percent, with its params and GFLOPs.  With `display_url` (the
    database URL without its password), the commands that show and plot the study follow; with
    `tensorboard` (the directory Ray's event files are under), the command that opens them.
    """
    every = queries.load(url, study=study, status=None)
    counts = every["status"].value_counts().to_dict() if len(every) else {}
    shown = [TrialStatus.COMPLETED, TrialStatus.PRUNED, TrialStatus.FAILED, TrialStatus.SKIPPED]
    shown += sorted(s for s in counts if s not in shown)
    header = f"study {study}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)
    protocol = frames.selection(every)
    splits = frames.selection_splits(every)
    if splits == {"test", "holdout"}:  # e.g. a study begun before the holdout default, resumed after it
        header += ("; mixed: some trials selected on test (the paper's protocol), the others on the "
                   "validation holdout; they are never pooled ([test] marks the former)")
    elif protocol is not None:
        header += "; " + (frames.SELECTED_ON_TEST if protocol == "test" else frames.SELECTED_ON_HOLDOUT)
    lines = [header]
    spent = compute.describe(queries.study_compute(url, study))
    if spent is not None:
        lines.append(spent)
    done = frames.completed(every)
    if done["best_val_acc"].notna().sum() == 0:
        lines.append("no completed trial with a validation accuracy yet")
        return "\n".join(lines + _next_steps(study, display_url, tensorboard))
    dims = frames.dimension_columns(every)
    rows = frames.per_configuration(done, ["best_val_acc", "test_acc"], dims, level)
    rows["label"] = tables.model_labels(rows, [d for d in dims if d != "seed"]).to_numpy()
    if len(splits) > 1:
        rows["label"] = [f"{label} [test]" if split == "test" else label
                         for label, split in zip(rows["label"], rows["validation"])]
    best = rows.sort_values("mean", ascending=False, kind="mergesort").head(top)
    val_head = "val acc (test set) %" if protocol == "test" else "val acc %"
    confidence = f"{100 * level:g}%"
    lines.append(f"top {len(best)} of {len(rows)} configurations by mean validation accuracy "
                 f"(seeds as replicates; test accuracy % as mean ± {confidence} CI half-width (n)):")
    table = [("#", "model", "params (M)", "GFLOPs", val_head, "test acc %")]
    for rank, (_, row) in enumerate(best.iterrows(), start=1):
        test = tables.pm_cell(row["test_acc_mean"], row["test_acc_half_width"], row["test_acc_n"])
        table.append((str(rank), str(row["label"]), tables.amount_text(float(row["params"]) / 1e6, 3),
                      tables.amount_text(float(row["flops"]) / 1e9, 3), f"{100 * row['mean']:.2f}", test))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        cells = [cell.ljust(width) if i == 1 else cell.rjust(width) for i, (cell, width) in enumerate(zip(r, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines + _next_steps(study, display_url, tensorboard))


def _next_steps(study: str, display_url: str | None, tensorboard: str | None) -> list[str]:
    lines = []
    if display_url is not None:
        lines += ["", f"results: {display_url}  (study {study!r})",
                  f"  python -m rksearch.results show {study} --storage {display_url}",
                  f"  python -m rksearch.plot figure4 --storage {display_url} --study {study} -o {study}-figure4.png"]
    if tensorboard is not None:
        lines += ["", f"tensorboard --logdir {shlex.quote(tensorboard)}"]
    return lines


__all__ = ["study_summary"]
