"""The control loop's safety rules, publishers, state and never-dying background run, on the
closed-loop simulator (real queries over the in-memory store) and on stand-in sources."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loop_sim import Sim

from slate.control.loop import ControlLoop
from slate.control.publishers import RoutesFilePublisher, XdsPublisher
from slate.control.report import IntervalReport
from slate.control.state import LoopState
from slate.model.routing import Routing, load_routing
from slate.model.scenario import Scenario
from slate.model.scenario_file import load_scenario
from slate.optimizer.errors import InfeasibleError
from slate.sim.closed_loop import make_loop
from slate.telemetry.observation import Observation, TelemetryUnavailable

ROOT = Path(__file__).resolve().parents[2]


def _weights(r: Routing) -> dict[tuple[str, str, str], dict[str, float]]:
    return {x.key: x.normalized() for x in r.routes}


def test_moves_at_most_max_shift_and_reports_ready(boutique: Scenario) -> None:
    sim = Sim(boutique, max_shift=0.1)
    before = None
    for _ in range(4):
        rep = sim.step()
        assert rep.held_reason is None
        assert rep.conditions["TelemetryFresh"].status == "True"
        assert rep.conditions["Solved"].status == "True"
        assert rep.max_weight_shift <= 0.1 + 1e-6
        if before is not None:
            for k, w in _weights(rep.routes).items():
                old = before.get(k, {})
                assert max(abs(w.get(c, 0) - old.get(c, 0)) for c in set(w) | set(old)) <= 0.1001
        before = _weights(rep.routes)
        assert rep.target is not None and rep.predicted is not None
    # Starting overloaded (local routing), the loop moved traffic.
    assert any(r.max_weight_shift > 0.05 for r in [rep])


class Down:
    def observe(self, policy: Any, at: datetime | None = None) -> Observation:
        raise TelemetryUnavailable("connection refused")


def test_outage_keeps_the_last_good_weights(boutique: Scenario) -> None:
    sim = Sim(boutique)
    good = sim.step().routes
    sim.loop.source = Down()
    rep = sim.step()
    assert rep.held_reason == "PrometheusUnavailable"
    assert rep.conditions["TelemetryFresh"].status == "False"
    assert rep.conditions["TelemetryFresh"].reason == "PrometheusUnavailable"
    assert rep.conditions["Ready"].status == "False"
    assert rep.conditions["Applied"].reason == "Held"
    assert rep.routes == good and sim.loop.state.weights == good
    assert all(sum(r.weights.values()) > 0 for r in rep.routes.routes)  # no locality zeroed


def test_stale_telemetry_is_held(boutique: Scenario) -> None:
    sim = Sim(boutique)
    good = sim.step().routes
    later = datetime.fromtimestamp(sim.t, UTC) + timedelta(minutes=10)  # no new scrapes since
    rep = sim.loop.step(later)
    assert rep.held_reason in ("Stale", "NoData")
    assert rep.conditions["TelemetryFresh"].status == "False"
    assert rep.routes == good


def test_infeasible_solve_keeps_weights(
    boutique: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = Sim(boutique)
    good = sim.step().routes

    def boom(*_a: Any, **_k: Any) -> Any:
        raise InfeasibleError("work bounds admit no routing")

    monkeypatch.setattr("slate.control.loop.solve", boom)
    rep = sim.step()
    assert rep.held_reason == "Infeasible"
    assert rep.conditions["Solved"].status == "False"
    assert rep.conditions["Solved"].reason == "Infeasible"
    assert rep.routes == good


def test_paused_and_dry_run_publish_no_routes(boutique: Scenario, tmp_path: Path) -> None:
    sim = Sim(boutique)
    sim.step()
    out = tmp_path / "routes.json"
    sim.loop.publishers.append(RoutesFilePublisher(out))
    sim.loop.update_policy(dataclasses.replace(sim.loop.policy, paused=True))
    kept = sim.loop.state.weights
    rep = sim.step()
    assert not out.exists()
    assert rep.conditions["Paused"].status == "True"
    assert rep.conditions["Applied"].reason == "Paused"
    assert sim.loop.state.weights == kept and rep.target is not None
    sim.loop.update_policy(dataclasses.replace(sim.loop.policy, paused=False))
    sim.loop.dry_run = True
    rep = sim.step()
    assert not out.exists() and rep.conditions["Applied"].reason == "DryRun"
    assert sim.loop.state.weights == kept
    sim.loop.dry_run = False
    sim.step()
    assert load_routing(out).routes == sim.loop.state.weights.routes


def test_a_failing_publisher_is_reported_and_the_loop_goes_on(boutique: Scenario) -> None:
    sim = Sim(boutique)

    class Broken:
        def publish(self, report: IntervalReport) -> None:
            raise OSError("disk full")

    sim.loop.publishers.insert(0, Broken())
    rep = sim.step()
    assert rep.conditions["Applied"].reason == "PublishFailed"
    assert sim.loop.publish_errors_total == 1
    assert sim.step().interval == 1


def _bare_report(ready: str) -> IntervalReport:
    """An interval report with no routes, prediction or observation, Ready=True for `ready`."""
    from slate.control.report import Condition

    return IntervalReport(
        "ns/p",
        datetime.now(UTC),
        {"Ready": Condition("True", ready)},
        Routing(()),
        None,
        None,
        None,
        0.0,
        False,
        None,
    )


def test_xds_publisher_sets_routing_once_per_change() -> None:
    calls: list[Routing] = []

    class Cache:
        def set_routing(self, routing: Routing) -> None:
            calls.append(routing)

    pub = XdsPublisher(Cache())
    rep = _bare_report("Converged")
    pub.publish(rep)
    pub.publish(rep)
    pub.publish(dataclasses.replace(rep, publish_routes=False))
    assert len(calls) == 1


def test_state_round_trips_and_a_restart_resumes_without_a_jump(boutique: Scenario) -> None:
    sim = Sim(boutique)
    for _ in range(3):
        sim.step()
    sim.loop.state.stalled = 2  # as if two intervals had not moved (loop.STALL_INTERVALS)
    sim.loop.state.still = 2
    text = sim.loop.state.to_json()
    restored = LoopState.from_json(text)
    assert restored.weights == sim.loop.state.weights
    assert restored.curves == sim.loop.state.curves
    # The hysteresis memory resumes too: the target, each weight's last direction, the step
    # limits (otherwise a restart would undo the damping).
    assert restored.target is not None and sim.loop.state.target is not None
    assert restored.target.routes == sim.loop.state.target.routes
    assert restored.directions == sim.loop.state.directions and restored.directions
    assert restored.step_limits == sim.loop.state.step_limits and restored.step_limits
    assert restored.stalled == 2 and restored.still == 2
    assert json.loads(restored.to_json()) == json.loads(text)
    # A new loop over the same telemetry, from the saved state: the first interval moves no
    # weight by more than the rollout limit from what was in force.
    fresh = ControlLoop(
        sim.loop.policy, sim.loop.source, state=restored, deployment=sim.loop.deployment
    )
    sim.advance()
    rep = fresh.step(datetime.fromtimestamp(sim.t, UTC))
    assert rep.max_weight_shift <= sim.loop.policy.max_shift_per_interval + 1e-6
    with pytest.raises(ValueError):
        LoopState.from_json('{"version": 99}')


def test_run_never_dies_silently() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def observe(self, policy: Any, at: datetime | None = None) -> Observation:
            self.calls += 1
            raise RuntimeError("bug in a backend")

    from slate.sim.closed_loop import policy_from_scenario

    scenario = load_scenario(ROOT / "examples/scenarios/boutique-2r.yaml")
    policy = policy_from_scenario(scenario)
    src = Flaky()
    loop = ControlLoop(policy, src)
    stop = threading.Event()
    t = threading.Thread(target=loop.run, args=(stop, 0.01))
    t.start()
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while src.calls < 3 and datetime.now(UTC) < deadline:
        stop.wait(0.01)
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert loop.errors_total >= 3


def test_the_loop_is_handed_no_scenario(boutique: Scenario) -> None:
    """The seam: what the loop holds before it runs is a policy, a telemetry source over metric
    samples, and where services run; nothing reachable from it is a scenario, a service model,
    a replica count or the truth's generator."""
    import gc
    import types

    from slate.model.app import App, Endpoint, Service
    from slate.model.latency import MMcStation
    from slate.sim.istio_metrics import IstioMetrics

    _mesh, _store, loop = make_loop(boutique)
    forbidden = (Scenario, App, Service, Endpoint, MMcStation, IstioMetrics)
    seen: set[int] = set()
    todo: list[Any] = [loop.policy, loop.source, loop.deployment, loop.state]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        assert not isinstance(obj, forbidden), f"the loop can reach a {type(obj).__name__}"
        todo.extend(gc.get_referents(obj))
    assert not any(isinstance(v, int) and v > 1 for v in loop.deployment.values())


def test_run_metrics_count_rollout_restarts() -> None:
    """`slate run --metrics-port`: every interval counted, and the ones that restarted a stalled
    rollout (IntervalReport.rollout_restarted) counted apart."""
    from slate.control.cli import _LoopMetrics

    metrics = _LoopMetrics()
    rep = _bare_report("RollingOut")
    metrics.publish(rep)
    metrics.publish(dataclasses.replace(rep, rollout_restarted=True))
    metrics.publish(rep)
    r = metrics.registry
    assert r.get_sample_value("slate_loop_intervals_total", {"held": ""}) == 3
    assert r.get_sample_value("slate_loop_rollout_restarts_total") == 1
    assert rep.to_json()["rollout_restarted"] is False


def test_run_metrics_say_whether_the_target_came_from_the_worker() -> None:
    """`slate run --metrics-port`: slate_loop_target_from_background follows each interval's
    IntervalReport.target_from_background (auto mode moves slow solves to the worker)."""
    from slate.control.cli import _LoopMetrics

    metrics = _LoopMetrics()
    rep = _bare_report("RollingOut")
    seen = []
    for from_worker in (False, True, False):
        metrics.publish(dataclasses.replace(rep, target_from_background=from_worker))
        seen.append(metrics.registry.get_sample_value("slate_loop_target_from_background"))
    assert seen == [0.0, 1.0, 0.0]


def test_a_stall_count_at_the_limit_restarts_the_rollout(boutique: Scenario) -> None:
    """The mechanism on its own (the closed-loop case is in tests/sim/test_closed_loop.py): with
    STALL_INTERVALS stalled intervals counted, the next interval clears every key's step limit
    and every weight's direction before rolling out, says so, and counts afresh."""
    from slate.control.loop import STALL_INTERVALS
    from slate.control.safety import DEADBAND

    sim = Sim(boutique)
    for _ in range(3):
        sim.step()
    st = sim.loop.state
    # Memory of a key and a weight no interval touches, so only a restart clears it.
    ghost = ("nobody", "nowhere", "none.x")
    st.step_limits[ghost] = DEADBAND / 4  # frozen by turning
    st.directions[(*ghost, "mars")] = -1
    st.stalled = STALL_INTERVALS - 1
    rep = sim.step()
    assert not rep.rollout_restarted  # one interval short: nothing cleared
    assert st.step_limits[ghost] == DEADBAND / 4 and st.directions[(*ghost, "mars")] == -1
    st.stalled = STALL_INTERVALS
    rep = sim.step()
    assert rep.rollout_restarted and rep.held_reason is None
    assert "rollout restarted" in rep.conditions["Applied"].message
    assert ghost not in st.step_limits and (*ghost, "mars") not in st.directions
    assert st.stalled <= 1


def test_a_move_from_rest_needs_a_gain_above_the_fits_uncertainty(boutique: Scenario) -> None:
    """The rollout's rule on its own (the closed-loop case is hotel-3r mmc in
    tests/sim/test_closed_loop.py): a move predicted to gain more than IMPROVEMENT_DEADBAND is
    made while the weights are moving; after an interval without a move it is made only if the
    gain also beats the fits' uncertainty (the band)."""
    from slate.control.loop import IMPROVEMENT_DEADBAND, _Lazy

    sim = Sim(boutique, max_shift=0.05)
    loop, st = sim.loop, sim.loop.state
    for _ in range(10):  # until the weights in force are not overloaded by the fits
        sim.step()
        learned, target = loop.last_learned, st.target
        assert learned is not None and target is not None
        now = loop._objective(learned, st.weights)
        if math.isfinite(now):
            break
    assert learned is not None and target is not None
    target_j = loop._objective(learned, target)
    gain = 1 - target_j / now
    assert gain > 2 * IMPROVEMENT_DEADBAND, gain  # the target is still well ahead

    def moves(still: int, band: float) -> bool:
        st.still = still
        new = loop._roll_out(
            learned, target, target_j, st.weights, loop.policy, _Lazy(lambda: band)
        )
        return _weights(new) != _weights(st.weights)

    assert moves(still=0, band=gain * 1.5)  # moving: the deadband rules
    assert not moves(still=1, band=gain * 1.5)  # at rest: not on a breath
    assert moves(still=1, band=gain / 1.5)  # at rest, clear evidence


def test_the_rest_count_follows_the_weights(boutique: Scenario) -> None:
    """LoopState.still counts the intervals in a row whose weights did not move."""
    sim = Sim(boutique, max_shift=0.1)
    counts = []
    for _ in range(14):
        rep = sim.step()
        counts.append((rep.max_weight_shift > 0, sim.loop.state.still))
    for i, (moved, still) in enumerate(counts):
        before = counts[i - 1][1] if i else 0
        assert still == (0 if moved else before + 1), counts
    assert any(m for m, _ in counts) and any(s > 1 for _, s in counts), counts
