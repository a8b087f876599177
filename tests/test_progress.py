"""The live view, driven without Ray: fake Tune trials, epoch results and a clock the test moves."""

from __future__ import annotations

import io
import re

from rksearch.search.progress import ProgressView


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Trial:
    """What the view reads of a Tune trial: id, status, last result, config (maybe an epochs value)."""

    def __init__(self, trial_id: str, epochs: int | None = None) -> None:
        self.trial_id, self.status, self.last_result = trial_id, "RUNNING", {}
        assignment = {} if epochs is None else {"epochs": epochs}
        self.config = {"trial": {"assignment": assignment, "seed": 0}}

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _epoch(view: ProgressView, trials: list, trial: _Trial, epoch: int, name: str, status: str = "running") -> None:
    result = {"epoch": epoch, "best_val_acc": 0.5 + epoch / 1000, "model_name": name, "trial_status": status}
    trial.last_result = result
    view.on_trial_result(0, trials, trial, result)


def _view(stream: io.StringIO, clock: _Clock, total: int = 4, **kwargs) -> ProgressView:
    return ProgressView("sweep", "best_val_acc", total=total, stream=stream, epochs=300, clock=clock, **kwargs)


def test_the_eta_counts_epochs_from_the_first_ones_not_finished_trials() -> None:
    clock, out = _Clock(), io.StringIO()
    view = _view(out, clock, every=30)
    trials = [_Trial("a"), _Trial("b")]
    view.on_trial_start(0, trials, trials[0])
    assert "eta ?" in view.line(trials)  # nothing trained yet: no rate to go on
    for epoch in (1, 2):
        clock.now += 10
        for trial, name in zip(trials, ("ERKNet-6x1 6x1 6x1", "IRKNet-2x1")):
            _epoch(view, trials, trial, epoch, name)
    # 4 epochs in 20 s = 0.2/s; 4 trials x 300 planned, 4 done: 1196 left -> 5980 s
    line = view.line(trials)
    assert "epochs 4/1200, 0.20/s, eta 1:39:40" in line, line
    assert "0/4 done, 2 running, 2 pending" in line


def test_a_trial_stopped_early_leaves_no_epochs_and_searched_epochs_are_planned_per_trial() -> None:
    clock, stopped = _Clock(), set()
    view = _view(io.StringIO(), clock, total=2, pruned=stopped.__contains__)
    short, long = _Trial("a", epochs=10), _Trial("b", epochs=20)
    trials = [short, long]
    view.on_trial_start(0, trials, short)
    clock.now += 10
    _epoch(view, trials, short, 1, "short")
    _epoch(view, trials, long, 1, "long")
    assert "epochs 2/30" in view.line(trials)
    short.status = "TERMINATED"  # ASHA stopped it after epoch 1
    stopped.add("a")
    assert "epochs 2/21" in view.line(trials)
    assert "1/2 done" in view.line(trials)


def test_each_running_trial_shows_its_epoch_names_cut_and_the_rest_counted() -> None:
    clock = _Clock()
    view = _view(io.StringIO(), clock, total=6)
    trials = [_Trial(str(i)) for i in range(5)]
    for i, trial in enumerate(trials):
        _epoch(view, trials, trial, 37 + i, f"ERKNet-6x1 6x1 6x1 (growth={i})")
    assert view.running(trials) == ("running: ERKNet-6x1.. 37/300, ERKNet-6x1.. 38/300, ERKNet-6x1.. 39/300 "
                                    "+2 more")
    trials[0].status = "PENDING"
    assert view.running(trials).endswith("+1 more")


def test_off_a_terminal_a_plain_line_every_n_seconds_and_no_carriage_return() -> None:
    clock, out = _Clock(), io.StringIO()
    view = _view(out, clock, every=30)
    trials = [_Trial("a")]
    view.on_trial_start(0, trials, trials[0])
    view.on_step_end(0, trials)  # the first line at once: the log shows the study began
    for epoch in range(1, 13):  # 60 s of Tune's loop, an epoch every 5 s
        clock.now += 5
        _epoch(view, trials, trials[0], epoch, "ERKNet-2x1")
        view.on_step_end(0, trials)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    assert len(lines) == 3, lines  # at 0, 30 and 60 s
    assert re.search(r"epochs 12/1200, 0\.20/s, eta \d+:\d\d:\d\d \| elapsed 1:00 \| best .* \| "
                     r"running: ERKNet-2x1 12/300$", lines[-1]), lines[-1]


def test_on_a_terminal_lines_redrawn_in_place_fitted_to_its_width(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    clock, out = _Clock(), _Tty()
    view = _view(out, clock)
    trials = [_Trial("a")]
    view.on_trial_start(0, trials, trials[0])
    for epoch in (1, 2, 3):
        clock.now += 2
        _epoch(view, trials, trials[0], epoch, "ERKNet-2x1")
    view.finish()
    text = out.getvalue()
    draws = text.split("\r")[1:]
    assert len(draws) == 4  # three epochs (a second or more apart) and the last
    assert not draws[0].startswith("\033[F") and all(d.startswith("\033[F\033[J") for d in draws[1:])
    assert draws[-1].endswith("running: ERKNet-2x1 3/300\n")
    assert "epochs 3/1200" in draws[-1] and "eta 39:54" in draws[-1]
    assert all(len(line) <= 99 for line in draws[-1].replace("\033[F\033[J", "").splitlines())
    monkeypatch.setenv("COLUMNS", "41")
    view.finish()
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("\033[F\033[J")  # two lines drawn last time: up one, then clear
    lines = last.replace("\033[F", "").replace("\033[J", "").splitlines()
    assert len(lines) == 5 and all(len(line) <= 40 for line in lines) and lines[1] == "  epochs 3/1200, 0.50/s, eta 39:54"


def test_the_view_pickles_without_its_stream_or_clock() -> None:
    import pickle

    view = pickle.loads(pickle.dumps(_view(io.StringIO(), _Clock())))
    assert view.clock() > 0 and view.stream is not None


def test_the_period_comes_from_the_environment_and_a_bad_one_is_not_fatal(monkeypatch) -> None:
    monkeypatch.setenv("RKSEARCH_PROGRESS_EVERY", "5")
    assert _view(io.StringIO(), _Clock()).every == 5.0
    monkeypatch.setenv("RKSEARCH_PROGRESS_EVERY", "soon")
    assert _view(io.StringIO(), _Clock()).every == 30.0
