"""Bounded exploration of a cluster pair whose RTT nobody measured (closed-loop.md): the loop
sends no traffic over it on a guess, probes it with a small share when its learned model (with the
pair's RTT at its triangle bound through clusters of known RTT) says it would pay, and rolls the
probe back when the measured latency worsens.

The mesh: one service in clusters a (1 replica, 85% busy under local routing) and b (4 replicas,
idle); c runs nothing. The policy gives RTT a-c and c-b (20 ms each), not a-b, and no call ever
crossed a-b, so a-b is unmeasured; its bound is 40 ms, at which moving calls from a to b pays.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slate.control.report import IntervalReport
from slate.model.scenario import Scenario
from slate.model.scenario_file import scenario_from_dict
from slate.sim.closed_loop import INTERVAL_S, SCRAPE_S, START, make_loop

KEY = ("ingress", "a", "api.get")


def mesh(rtt_ab: float) -> Scenario:
    doc: dict[str, Any] = {
        "name": "probe",
        "clusters": ["a", "b", "c"],
        "rtt_ms": {"a": {"b": rtt_ab, "c": 20}, "b": {"c": 20}},
        "egress_usd_per_gb": {"default": 0.0},
        "objective": {"max_utilization": 0.95},
        "services": {
            "api": {"replicas": {"a": 1, "b": 4}, "endpoints": {"get": {"service_ms": 10}}}
        },
        "ingress": [{"endpoint": "api.get", "rps": {"a": 85}, "request_kb": 1, "response_kb": 1}],
    }
    return scenario_from_dict(doc)


def run(scenario: Scenario, intervals: int) -> list[tuple[IntervalReport, list[Any]]]:
    """Per interval: the report and the pairs the loop's learning found unmeasured."""
    truth, store, loop = make_loop(scenario, unlisted_rtt=[("a", "b")])
    assert ("a", "b") not in loop.policy.rtt_ms and ("b", "a") not in loop.policy.rtt_ms
    t = START.timestamp()
    reports = []
    for _ in range(intervals):
        truth.run(store, t + SCRAPE_S, t + INTERVAL_S, SCRAPE_S)
        t += INTERVAL_S
        rep = loop.step(datetime.fromtimestamp(t, UTC))
        assert loop.last_learned is not None
        reports.append((rep, list(loop.last_learned.unmeasured_rtt)))
        if rep.publish_routes and rep.routes.routes:
            truth.set_routing(rep.routes)
    return reports


def share_to_b(rep: IntervalReport) -> float:
    r = rep.routes.get(*KEY)
    return 0.0 if r is None else r.normalized().get("b", 0.0)


def test_an_unmeasured_pair_is_probed_measured_then_used() -> None:
    runs = run(mesh(rtt_ab=30.0), 8)
    (first, unmeasured), rest = runs[0], runs[1:]
    assert unmeasured == [("a", "b")]
    assert first.exploring
    # The probe: a small share, never more than PROBE_SHARE (0.05), over the unmeasured pair.
    assert 0.0 < share_to_b(first) <= 0.05 + 1e-9
    # The probe's calls measured the RTT; then the loop uses the pair for real.
    assert all(u == [] for _, u in rest)
    assert all(rep.held_reason is None for rep, _ in rest)
    assert max(share_to_b(rep) for rep, _ in rest) > 0.15


def test_a_probe_that_worsens_latency_is_rolled_back() -> None:
    runs = run(mesh(rtt_ab=1000.0), 4)
    assert 0.0 < share_to_b(runs[0][0]) <= 0.05 + 1e-9
    assert runs[1][0].held_reason == "ExplorationRolledBack"
    # Back to the weights before the probe; measured now (1000 ms): not sent over again.
    assert all(share_to_b(rep) < 1e-6 for rep, _ in runs[1:])
    assert runs[1][1] == []


def test_no_probe_without_a_bound() -> None:
    """With a-c unmeasured too, nothing bounds a-b: nothing is sent over either on a guess."""
    truth, store, loop = make_loop(mesh(rtt_ab=30.0), unlisted_rtt=[("a", "b"), ("a", "c")])
    t = START.timestamp() + INTERVAL_S
    truth.run(store, t - INTERVAL_S + SCRAPE_S, t, SCRAPE_S)
    rep = loop.step(datetime.fromtimestamp(t, UTC))
    assert share_to_b(rep) == 0.0
