"""One trial, and nothing more: what a Ray worker imports.

`config` (the trial's typed config), `data` and `readers` (the three splits), `runtime`
(device and precision), `checkpoint`, `loop` (`run_trial`), `environment` (what the worker
ran) and `failures` (failure categories).  Kept free of Ray, Optuna, pandas and SQLAlchemy:
`tests/test_engine.py` checks what a worker's import pulls in.
"""
