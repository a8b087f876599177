"""A study, run.

`schema` (the study file's models) and `loader` (YAML in, line-numbered `StudyError` out);
`planner` (every point of the space, priced, with its trial key) and `dryrun` (its table);
`searcher` (Optuna behind the study's budgets and dedup) and `schedulers` (ASHA, the stopper);
`engine` (the Ray Tune driver), `trainable` (what a worker runs), `preflight` (cluster checks
before the first trial) and `progress` (the live status line).

Nothing is imported here: `rksearch.search.trainable` is what workers load, and it must not
pull in the engine's Ray Tune schedulers or Optuna.
"""
