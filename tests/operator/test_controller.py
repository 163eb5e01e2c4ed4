"""The per-policy lifecycle (controller.py) with a stand-in loop and recording sinks: status as the
contract says, events on transitions, invalid specs, conflicts, pause, errors, resume from status.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from standin_loop import StandinLoop, standin_factory

from slate.model.policy import TrafficPolicy
from slate.operator.controller import Controller, PolicyRef
from slate.operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.asyncio


def manifest(
    name: str = "shop", created: str = "2026-12-04T10:00:00Z", **spec: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples/policies/shop.yaml").read_text())
    doc["metadata"].update(name=name, uid=f"uid-{name}", generation=1, creationTimestamp=created)
    doc["spec"].update(spec)
    return doc


class Sinks:
    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        key = f"{namespace}/{name}"
        self.patches.append((key, dict(status)))
        cur = self.status.setdefault(key, {})
        for k, v in status.items():
            if v is None:
                cur.pop(k, None)
            else:
                cur[k] = copy.deepcopy(v)

    def event(self, ref: PolicyRef, type: str, reason: str, message: str) -> None:
        self.events.append((ref.key, type, reason, message))


def make(sinks: Sinks, factory: Any = standin_factory, publishers: Any = None) -> Controller:
    return Controller(
        factory,
        sinks,
        sinks,
        publishers or (lambda policy, uid: []),
        OperatorMetrics(),
        clock=lambda: datetime(2026, 12, 4, 10, 0, tzinfo=UTC),
    )


def conditions(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


async def test_status_after_one_interval_matches_the_contract() -> None:
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest())
    delay = await c.tick(rec)
    assert delay == 30.0
    st = sinks.status["shop/shop"]
    assert st["observedGeneration"] == 1
    assert conditions(st) == {
        "Ready": ("True", "RollingOut"),
        "TelemetryFresh": ("True", "Fresh"),
        "Solved": ("True", "Optimal"),
        "Applied": ("True", "RollingOut"),
    }
    for cond in st["conditions"]:
        assert set(cond) >= {"type", "status", "reason", "lastTransitionTime"}
    assert st["lastSolveTime"].endswith("Z") and st["solveSeconds"] == 0.01
    assert st["predicted"] == {
        "meanLatencyMs": 41.0,
        "egressUsdPerHour": 0.25,
        "maxUtilization": 0.5,
    }
    assert st["observed"] == {"meanLatencyMs": 44.0}
    route = st["routes"][0]
    assert set(route) == {"fromService", "fromCluster", "to", "weights"}
    assert route["weights"] == [
        {"cluster": "us-east", "weight": 0.1},
        {"cluster": "us-west", "weight": 0.9},
    ]
    assert st["targetRoutes"][0]["weights"] == [
        {"cluster": "us-east", "weight": 0.5},
        {"cluster": "us-west", "weight": 0.5},
    ]
    assert "state" in st
    # events for the first conditions
    reasons = {(e[1], e[2]) for e in sinks.events}
    assert ("Normal", "RollingOut") in reasons and ("Normal", "Optimal") in reasons


async def test_conditions_keep_transition_time_and_events_only_on_change() -> None:
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest())
    await c.tick(rec)
    first = {x["type"]: x["lastTransitionTime"] for x in sinks.status["shop/shop"]["conditions"]}
    n_events = len(sinks.events)
    c.clock = lambda: datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
    await c.tick(rec)
    later = {x["type"]: x["lastTransitionTime"] for x in sinks.status["shop/shop"]["conditions"]}
    assert later == first
    assert len(sinks.events) == n_events  # nothing changed state
    for _ in range(4):  # converge (0.1 per interval from 0.9 -> 0.5)
        await c.tick(rec)
    assert conditions(sinks.status["shop/shop"])["Applied"] == ("True", "Converged")
    assert sinks.events[-1][2] == "Converged"


async def test_invalid_spec_is_not_acted_on_and_names_the_field() -> None:
    sinks = Sinks()
    c = make(sinks)
    bad = manifest()
    bad["spec"]["network"]["rtt"][0]["to"] = "eu-west"
    rec = c.observe(bad)
    await c.tick(rec)
    st = sinks.status["shop/shop"]
    assert conditions(st) == {"Ready": ("False", "InvalidSpec")}
    msg = st["conditions"][0]["message"]
    assert msg.startswith("spec.network.rtt[0].to: unknown cluster 'eu-west'")
    assert rec.loop is None  # no loop runs for an invalid spec
    assert sinks.events[-1][:3] == ("shop/shop", "Warning", "InvalidSpec")
    n = len(sinks.patches)
    await c.tick(rec)  # same problem: no second write, no second event
    assert len(sinks.patches) == n
    # fixed -> acted on
    rec = c.observe(manifest())
    await c.tick(rec)
    assert conditions(sinks.status["shop/shop"])["Ready"] == ("True", "RollingOut")


async def test_schema_level_problem_also_reported_without_a_crd() -> None:
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest(services=[{"name": "cart", "port": 0}]))
    await c.tick(rec)
    cond = sinks.status["shop/shop"]["conditions"][0]
    assert (cond["reason"], cond["message"][:24]) == ("InvalidSpec", "spec.services[0].port: m")


async def test_conflict_older_wins_and_newer_takes_over_when_older_goes() -> None:
    sinks = Sinks()
    c = make(sinks)
    older = c.observe(manifest("a", "2026-12-04T09:00:00Z"))
    newer = c.observe(manifest("b", "2026-12-04T09:30:00Z"))
    await c.tick(older)
    delay = await c.tick(newer)
    assert delay == 5.0
    st = sinks.status["shop/b"]
    assert conditions(st) == {"Ready": ("False", "Conflict")}
    assert "shop/a" in st["conditions"][0]["message"]
    assert "routes" not in st  # the loser publishes nothing
    assert conditions(sinks.status["shop/a"])["Ready"][0] == "True"
    c.forget("shop", "a")
    assert newer.wake.is_set()
    await c.tick(newer)
    assert conditions(sinks.status["shop/b"])["Ready"] == ("True", "RollingOut")
    assert sinks.status["shop/b"]["routes"]


async def test_same_service_name_in_another_namespace_is_a_conflict() -> None:
    """slate's xDS names services without their namespace: the newer policy is refused, with a
    condition naming the older one and why, and takes over when the older one goes."""
    sinks = Sinks()
    c = make(sinks)
    a = c.observe(manifest("a", "2026-12-04T09:00:00Z"))
    other = manifest("b", "2026-12-04T09:30:00Z")
    other["metadata"]["namespace"] = "other"
    b = c.observe(other)
    await c.tick(a)
    await c.tick(b)
    st = sinks.status["other/b"]
    assert conditions(st) == {"Ready": ("False", "Conflict")}
    message = st["conditions"][0]["message"]
    assert "shop/a" in message and "without its namespace" in message, message
    assert "routes" not in st
    assert ("other/b", "Warning", "Conflict") in [e[:3] for e in sinks.events]
    c.forget("shop", "a")
    assert b.wake.is_set()  # a policy in another namespace is woken too
    await c.tick(b)
    assert conditions(sinks.status["other/b"])["Ready"] == ("True", "RollingOut")


async def test_paused_keeps_weights_and_reports_paused() -> None:
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest())
    await c.tick(rec)
    before = sinks.status["shop/shop"]["routes"]
    paused = manifest(paused=True)
    paused["metadata"]["generation"] = 2
    rec = c.observe(paused)
    await c.tick(rec)
    st = sinks.status["shop/shop"]
    assert st["routes"] == before
    assert conditions(st)["Paused"] == ("True", "Paused")
    assert conditions(st)["Ready"] == ("False", "Paused")
    assert st["observedGeneration"] == 2
    assert c.records["shop/shop"].loop is not None
    assert c.records["shop/shop"].loop.policy.paused  # type: ignore[attr-defined]


async def test_loop_error_is_counted_reported_and_retried() -> None:
    sinks = Sinks()
    metrics = OperatorMetrics()

    def failing(policy: TrafficPolicy, pubs: Any, state: str | None) -> StandinLoop:
        return StandinLoop(policy, pubs, state, fail_with=RuntimeError("boom"))

    c = make(sinks, failing)
    c.metrics = metrics
    c.observe(manifest())

    class Stop:
        def __init__(self) -> None:
            self.calls = 0

        def is_set(self) -> bool:
            self.calls += 1
            return self.calls > 2

        async def wait(self, timeout: float | None = None) -> None:
            await asyncio.sleep(0)

    await c.run("shop", "shop", Stop())
    assert conditions(sinks.status["shop/shop"]) == {"Ready": ("False", "LoopError")}
    assert "RuntimeError: boom" in sinks.status["shop/shop"]["conditions"][0]["message"]
    got = metrics.registry.get_sample_value(
        "slate_loop_errors_total", {"namespace": "shop", "policy": "shop", "reason": "RuntimeError"}
    )
    assert got == 2


async def test_restart_resumes_from_status_state() -> None:
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest())
    for _ in range(2):
        await c.tick(rec)
    saved = copy.deepcopy(sinks.status["shop/shop"])
    # a new operator process: the object comes back with its status
    body = manifest()
    body["status"] = saved
    sinks2 = Sinks()
    sinks2.status["shop/shop"] = copy.deepcopy(saved)
    c2 = make(sinks2)
    rec2 = c2.observe(body)
    await c2.tick(rec2)
    loop = rec2.loop
    assert isinstance(loop, StandinLoop) and loop.resumed
    w_before = saved["routes"][0]["weights"]
    w_after = sinks2.status["shop/shop"]["routes"][0]["weights"]
    for a, b in zip(w_before, w_after, strict=True):
        assert abs(a["weight"] - b["weight"]) <= 0.1 + 1e-9  # one rollout step, no jump


async def test_spec_change_updates_the_running_loop() -> None:
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest())
    await c.tick(rec)
    loop = rec.loop
    changed = manifest(rollout={"interval": "10s", "maxShiftPerInterval": 0.5})
    changed["metadata"]["generation"] = 2
    c.observe(changed)
    assert rec.wake.is_set()
    assert await c.tick(rec) == 10.0
    assert rec.loop is loop
    assert sinks.status["shop/shop"]["observedGeneration"] == 2


async def test_metrics_after_an_interval() -> None:
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest())
    await c.tick(rec)
    r = c.metrics.registry
    labels = {"namespace": "shop", "policy": "shop"}
    assert r.get_sample_value("slate_predicted_latency_seconds", labels) == pytest.approx(0.041)
    assert r.get_sample_value("slate_observed_latency_seconds", labels) == pytest.approx(0.044)
    assert r.get_sample_value("slate_predicted_egress_usd_per_hour", labels) == 0.25
    assert r.get_sample_value("slate_exploration_steps_total", labels) == 1
    assert r.get_sample_value("slate_rollout_restarts_total", labels) == 1
    assert r.get_sample_value("slate_solve_seconds_count", labels) == 1
    assert r.get_sample_value("slate_policy_ready", labels) == 1
    w = {
        **labels,
        "from_service": "ingress",
        "from_cluster": "us-east",
        "to": "cart",
        "cluster": "us-west",
    }
    assert r.get_sample_value("slate_route_weight", w) == pytest.approx(0.9)
    fit = {**labels, "service": "frontend", "cluster": "us-west"}
    assert r.get_sample_value("slate_fit_r2", fit) == pytest.approx(0.93)
    c.forget("shop", "shop")
    assert r.get_sample_value("slate_route_weight", w) is None


async def test_a_loop_that_will_not_run_again_is_closed() -> None:
    """A loop replaced (another output), forgotten (policy deleted) or stopped (shutdown) lets go
    of its solver thread (ControlLoop.close); the one running is not closed."""
    sinks = Sinks()
    c = make(sinks)
    rec = c.observe(manifest())
    await c.tick(rec)
    first = rec.loop
    assert isinstance(first, StandinLoop) and not first.closed
    c.observe(manifest(output="dryRun"))  # publishers depend on the output: a new loop
    await c.tick(rec)
    second = rec.loop
    assert isinstance(second, StandinLoop) and second is not first
    assert first.closed and not second.closed
    other = c.observe(manifest("other", services=[{"name": "ads", "port": 8080}]))
    await c.tick(other)
    third = other.loop
    assert isinstance(third, StandinLoop)
    c.forget("shop", "shop")
    assert second.closed and not third.closed
    await c.shutdown()
    assert third.closed


async def test_a_solve_still_running_is_a_normal_event_and_a_hold_a_warning() -> None:
    """A large mesh's first interval keeps its weights while the target solve goes on in the
    worker (reason Solving): progress, so its events are Normal; any other hold is a Warning."""
    from slate.operator.status import transitions

    def conds(reason: str, applied: str) -> list[dict[str, str]]:
        return [
            {"type": "Ready", "status": "False", "reason": reason, "message": "m"},
            {"type": "Solved", "status": "Unknown", "reason": reason, "message": "m"},
            {"type": "Applied", "status": "False", "reason": applied, "message": "m"},
        ]

    solving = transitions(None, conds("Solving", "Solving"))
    assert [(t.type, t.reason) for t in solving] == [("Normal", "Solving")] * 3
    held = transitions(None, conds("SolverFailed", "Held"))
    assert {t.type for t in held} == {"Warning"}


async def test_an_interval_held_for_its_solve_is_not_counted_as_a_loop_error() -> None:
    """slate_loop_errors_total counts failed and held intervals, not one that keeps its weights
    while its target solve goes on in the worker (held_reason Solving)."""
    from standin_loop import Cond, Report

    from slate.model.routing import Routing

    c = make(Sinks())
    c.metrics = OperatorMetrics()
    ref = PolicyRef("shop", "shop", None)

    def held(reason: str) -> Report:
        return Report(
            policy="shop/shop",
            at=datetime(2026, 12, 6, tzinfo=UTC),
            conditions={"Ready": Cond("False", reason, "m")},
            routes=Routing(()),
            target=None,
            predicted=None,
            observed=None,
            solve_seconds=0.0,
            exploring=False,
            held_reason=reason,
        )

    def errors(reason: str) -> float | None:
        return c.metrics.registry.get_sample_value(
            "slate_loop_errors_total", {"namespace": "shop", "policy": "shop", "reason": reason}
        )

    c._record_metrics(ref, held("Solving"), 0.1)
    c._record_metrics(ref, held("SolverFailed"), 0.1)
    assert errors("Solving") is None and errors("SolverFailed") == 1
