"""A study, run: the study file's schema and loader, the planner that prices every point of its
space, the searcher adaptor, the Ray Tune engine, the trainable workers run, preflight checks
of a cluster and the live progress line.

Nothing is imported here: `rksearch.search.trainable` is what workers load, and it must not
pull in the engine's Ray Tune schedulers or Optuna.
"""
