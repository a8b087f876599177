"""Analysis of recorded studies: frames, statistics over seeds, tables, ablations, Pareto fronts, plots.

One job per submodule:

- `values`: what counts as a missing cell, and integer codes to group list-valued dimensions;
- `frames`: families, completed trials, search dimensions, `replicates` over seeds, selection;
- `stats`: `mean_ci`, `paired`, `holm`: intervals and tests that invent nothing from one seed;
- `tables`: the paper's Table 1 (`paper_table`) as Markdown, LaTeX or CSV;
- `ablations`: per factor and level, the seed-paired difference from the base, Holm-adjusted;
- `pareto`, `plots`, `report` (the end-of-study summary), `trained` (a trial's model, reloaded);
- `optuna_plots`: Optuna's own importance, parallel, contour and history plots of the Optuna
  study kept in the same database.

The public names (``rksearch.analysis.mean_ci``, ``.ablation``, ``.paper_table``,
``.figure4``, ...) resolve lazily, each importing only the submodule that defines it (and what
that needs), so importing one submodule (``rksearch.analysis.pareto`` from `rksearch.results`)
does not import scipy or matplotlib, and ``rksearch.analysis.missing`` imports neither, nor torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: the submodule that defines each public name: every name in a submodule's ``__all__`` but four.
#: ``pareto`` is the submodule's own name (once imported, the submodule would hide the function:
#: call ``rksearch.analysis.pareto.pareto``); ``load``, ``spec`` and ``normalisation`` mean
#: something only beside their module's name (``trained.load`` reloads a trial's model, where a
#: bare ``analysis.load`` reads as the study loader ``rksearch.results.load``).
_MODULES: dict[str, tuple[str, ...]] = {
    "values": ("missing", "codes"),
    "frames": (
        "FAMILIES", "CONFIG_KEY", "STATS", "family", "families", "completed", "dimension_columns", "ordered_groups",
        "level_text", "require_metric", "replicates", "per_configuration", "selection_text", "selection",
        "selection_splits", "selection_note", "SELECTED_ON_TEST", "SELECTED_ON_HOLDOUT",
    ),
    "stats": ("BOOTSTRAP_MIN_N", "RESAMPLING_SEED", "EXACT_SIGN_FLIP_MAX_N", "mean_ci", "bootstrap_ci", "Paired",
              "Verdict", "paired", "paired_differences", "holm"),
    "tables": ("TABLE_FIELDS", "paper_table", "model_labels", "amount_text", "pm_cell", "table_caption",
               "table_markdown", "table_latex", "table_csv", "markdown_row", "markdown_rule"),
    "ablations": ("Design", "ablation", "ablation_markdown", "confidence_label"),
    "pareto": ("minimises", "MINIMISED_WORDS", "MINIMISED_SUFFIXES"),
    "plots": ("AXES", "EPOCH_AXES", "DEFAULT_METRIC", "REFERENCE_COLUMNS", "axis", "style", "read_reference",
              "figure4", "curves", "pareto_plot", "ablation_chart"),
    "optuna_plots": ("FANOVA_SEED", "MIN_COMPLETE", "OPTUNA_MARKER_TABLE", "StudyObjective", "optuna_figure",
                     "optuna_study", "param_importances", "study_objective"),
    "report": ("study_summary",),
    "trained": ("ModelError", "Trained", "load_model", "evaluate", "export"),
}  # fmt: skip

#: public name -> the submodule that defines it
_PUBLIC: dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'rksearch.analysis' has no attribute {name!r}")
    return getattr(import_module(f"rksearch.analysis.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = sorted(_PUBLIC)
