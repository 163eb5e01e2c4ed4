"""ControlLoop(solve_mode="background"): the target LP is solved in a worker thread from one
interval's fits and used by the next interval; failures are logged, counted and reported, and the
interval then solves synchronously. solve_mode="auto" goes to the worker once a target solve is
slow and comes back once one is fast; while fast, an interval waits a bounded time for its own
solve."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from loop_sim import Sim

from slate.control.learned import Learned
from slate.control.report import IntervalReport
from slate.model.scenario import Scenario
from slate.optimizer.solve import PolicyResult

ROOT = Path(__file__).resolve().parents[2]


def _spy(sim: Sim, fail_in_worker: bool = False) -> list[tuple[str, Learned]]:
    """Record (thread name, fits) of every target solve; optionally crash those in the worker
    thread."""
    calls: list[tuple[str, Learned]] = []
    inner = sim.loop._solve

    def solve(learned: Learned, cautious: bool) -> PolicyResult:
        name = threading.current_thread().name
        calls.append((name, learned))
        if fail_in_worker and name.startswith("slate-solve"):
            raise RuntimeError("the worker broke")
        return inner(learned, cautious)

    sim.loop._solve = solve  # type: ignore[method-assign]
    return calls


def _steps(sim: Sim, n: int) -> tuple[list[IntervalReport], list[Learned]]:
    """n intervals: their reports, and the fits each learned."""
    reports, fits = [], []
    for _ in range(n):
        reports.append(sim.step())
        assert sim.loop.last_learned is not None
        fits.append(sim.loop.last_learned)
    return reports, fits


def _which(calls: list[tuple[str, Learned]], fits: list[Learned]) -> list[tuple[bool, int]]:
    """(in the worker thread, interval whose fits it solved) of each recorded solve."""
    index = {id(f): i for i, f in enumerate(fits)}
    return [(name.startswith("slate-solve"), index[id(learned)]) for name, learned in calls]


def _wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_target_is_solved_in_the_background_for_the_next_interval(
    boutique: Scenario,
) -> None:
    sim = Sim(boutique, max_shift=0.1)
    sim.loop.solve_mode = "background"
    calls = _spy(sim)
    reports, fits = _steps(sim, 4)
    _wait_for(lambda: len(calls) == 4)  # the last interval's fits went to the worker last
    sim.loop.close()
    for rep in reports:
        assert rep.held_reason is None
        assert rep.conditions["Solved"].status == "True"
        assert rep.target is not None and rep.predicted is not None
        assert rep.max_weight_shift <= 0.1 + 1e-6
    # The first interval solves on its own thread (nothing was solved before it) and its answer
    # also serves the second; from the second on, each interval's fits go to the worker.
    assert _which(calls, fits) == [(False, 0), (True, 1), (True, 2), (True, 3)]
    assert sim.loop.background_errors_total == 0
    assert sim.loop.last_background_s is not None


def test_a_failed_background_solve_is_reported_and_the_interval_solves_itself(
    boutique: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    sim = Sim(boutique)
    sim.loop.solve_mode = "background"
    sim.loop.on_error = errors.append
    calls = _spy(sim, fail_in_worker=True)
    with caplog.at_level(logging.ERROR, logger="slate.control.loop"):
        # The first interval solves itself and its answer serves the second, which hands its own
        # fits to the worker: that crashes.
        (first, second), fits = _steps(sim, 2)
        _wait_for(lambda: sim.loop.background_errors_total == 1)
        (third,), more = _steps(sim, 1)  # nothing from the worker: solves itself
        fits += more
    sim.loop.close()
    assert [r.held_reason for r in (first, second, third)] == [None, None, None]
    assert third.conditions["Solved"].status == "True"
    assert sim.loop.background_errors_total == 1
    assert [type(e) for e in errors] == [RuntimeError]
    assert any("background_solve_crashed" in r.getMessage() for r in caplog.records)
    assert _which(calls, fits) == [(False, 0), (True, 1), (False, 2)]


def test_without_background_solve_every_interval_solves_on_its_own_thread(
    boutique: Scenario,
) -> None:
    sim = Sim(boutique)
    calls = _spy(sim)
    _reports, fits = _steps(sim, 3)
    assert [name for name, _f in calls] == [threading.main_thread().name] * 3
    assert _which(calls, fits) == [(False, 0), (False, 1), (False, 2)]


def test_auto_moves_slow_solves_to_the_worker_and_fast_ones_back(
    boutique: Scenario, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """solve_mode="auto" by the last target solve's wall time against BACKGROUND_AFTER_S (here
    moved instead of slowing the solves down): while fast, each interval waits for the solve of
    its own fits (in the worker thread, SOLVE_WAIT_S at most); once slow, the next interval takes
    the answer kept from the slow one and hands its own fits to the worker; once the worker's
    solve is fast again, back to waiting."""
    import slate.control.loop as loop_mod

    sim = Sim(boutique, max_shift=0.1)
    sim.loop.solve_mode = "auto"
    calls = _spy(sim)
    monkeypatch.setattr(loop_mod, "BACKGROUND_AFTER_S", 1e9)  # every solve counts as fast
    with caplog.at_level(logging.INFO, logger="slate.control.loop"):
        reports, fits = _steps(sim, 2)
        monkeypatch.setattr(loop_mod, "BACKGROUND_AFTER_S", 0.0)  # every solve counts as slow
        more, more_fits = _steps(sim, 2)
        _wait_for(lambda: len(calls) == 4)  # the fourth interval's fits reached the worker
        monkeypatch.setattr(loop_mod, "BACKGROUND_AFTER_S", 1e9)
        last, last_fits = _steps(sim, 1)
    sim.loop.close()
    moved = [r.getMessage() for r in caplog.records if "target_solve_moved" in r.getMessage()]
    assert [m.split(" to=")[1].split()[0] for m in moved] == ["worker", "interval"], moved
    reports += more + last
    fits += more_fits + last_fits
    # Every solve ran in the worker thread, each on its interval's fits; the third and fourth
    # intervals took the answer solved from the interval before.
    assert _which(calls, fits) == [(True, 0), (True, 1), (True, 2), (True, 3), (True, 4)]
    assert [r.target_from_background for r in reports] == [False, False, True, True, False]
    assert [r.to_json()["target_from_background"] for r in reports[1:3]] == [False, True]
    for rep in reports:
        assert rep.held_reason is None and rep.conditions["Solved"].status == "True"
        assert rep.max_weight_shift <= 0.1 + 1e-6
    assert sim.loop.background_errors_total == 0


def test_the_run_command_solves_in_the_background_when_slow_by_default() -> None:
    """`slate run`: --background-solve defaults to auto; the bare flag means always."""
    from slate.cli import build_parser
    from slate.control.cli import _SOLVE_MODES

    parse = build_parser().parse_args
    base = ["run", "--policy", "p.yaml", "--prometheus", "http://127.0.0.1:9090"]
    assert _SOLVE_MODES[parse(base).background_solve] == "auto"
    assert _SOLVE_MODES[parse([*base, "--background-solve"]).background_solve] == "background"
    assert _SOLVE_MODES[parse([*base, "--background-solve", "never"]).background_solve] == "inline"


def test_a_closed_loop_starts_no_worker(boutique: Scenario) -> None:
    """close() (the operator closes the loop of a policy that went) while an interval may still
    run: that interval solves inline and hands nothing to a new worker thread."""
    sim = Sim(boutique)
    sim.loop.solve_mode = "background"
    calls = _spy(sim)
    _reports, fits = _steps(sim, 2)
    _wait_for(lambda: len(calls) == 2)
    sim.loop.close()
    reports, more = _steps(sim, 2)
    assert sim.loop._executor is None
    # The third interval takes the answer the worker had finished; its own fits go nowhere, so
    # the fourth solves inline.
    assert _which(calls, fits + more) == [(False, 0), (True, 1), (False, 3)]
    assert [r.target_from_background for r in reports] == [True, False]


def test_auto_holds_an_interval_whose_solve_outlasts_the_wait(
    boutique: Scenario, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """solve_mode="auto" before any solve was timed (a loop's first interval at 10 x 100 solved
    inline for 2.3-2.8 s): a solve still running after SOLVE_WAIT_S is left to the worker. That
    interval keeps the weights in force and says so (held, reason Solving); the next one takes
    the late answer and hands its own fits to the worker."""
    import slate.control.loop as loop_mod

    sim = Sim(boutique, max_shift=0.1)
    sim.loop.solve_mode = "auto"
    calls = _spy(sim)
    inner = sim.loop._solve

    def slow(learned: Learned, cautious: bool) -> PolicyResult:
        time.sleep(0.3)
        return inner(learned, cautious)

    sim.loop._solve = slow  # type: ignore[method-assign]
    monkeypatch.setattr(loop_mod, "SOLVE_WAIT_S", 0.05)
    with caplog.at_level(logging.INFO, logger="slate.control.loop"):
        reports, fits = _steps(sim, 1)
        in_force = sim.loop.state.weights  # where the mesh routed (locally) before the loop
        more, more_fits = _steps(sim, 1)
        _wait_for(lambda: len(calls) == 2)
    sim.loop.close()
    (first, second), fits = reports + more, fits + more_fits
    assert first.held_reason == "Solving" and first.max_weight_shift == 0.0
    assert first.conditions["Solved"].status == "Unknown"
    assert first.conditions["Solved"].reason == "Solving"
    assert first.conditions["Applied"].reason == "Solving"
    assert first.conditions["Applied"].status == "False"
    assert first.conditions["Ready"].reason == "Solving"
    assert first.routes.routes and first.routes == in_force
    assert second.held_reason is None and second.target_from_background
    assert second.conditions["Solved"].status == "True" and second.max_weight_shift > 0
    assert _which(calls, fits) == [(True, 0), (True, 1)]
    moved = [r.getMessage() for r in caplog.records if "target_solve_moved" in r.getMessage()]
    assert len(moved) == 1 and "to=worker" in moved[0], moved
    assert sim.loop.background_errors_total == 0


def test_a_closed_auto_loop_solves_in_its_interval(boutique: Scenario) -> None:
    """close() before or while an interval runs: an auto loop waits for no worker; the interval
    solves on its own thread, and no executor is started again."""
    sim = Sim(boutique)
    sim.loop.solve_mode = "auto"
    calls = _spy(sim)
    _reports, fits = _steps(sim, 1)  # solved in the worker, waited for
    sim.loop.close()
    reports, more = _steps(sim, 1)
    assert sim.loop._executor is None
    assert _which(calls, fits + more) == [(True, 0), (False, 1)]
    assert reports[0].held_reason is None and reports[0].conditions["Solved"].status == "True"
