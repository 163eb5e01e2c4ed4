"""The operator's default loop factory builds slate.control's real ControlLoop (not the stand-in the
other operator tests use): an unreachable Prometheus holds the weights and says why, and the state
it saves into status resumes a new loop. The real loop's fit quality reaches the operator's
`slate_fit_r2` (the loop on the closed-loop simulator's in-memory telemetry)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from slate.model.policy import load_policy
from slate.model.scenario_file import scenario_from_dict
from slate.operator.controller import Controller
from slate.operator.seams import default_loop_factory
from slate.sim.closed_loop import START, make_loop

ROOT = Path(__file__).resolve().parents[2]


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


class Recorder:
    def __init__(self) -> None:
        self.reports: list[Any] = []

    def publish(self, report: Any) -> None:
        self.reports.append(report)


def test_default_factory_runs_the_real_loop_and_holds_on_an_outage() -> None:
    policy = load_policy(ROOT / "examples/policies/minimal.yaml")
    make = default_loop_factory(_closed_port_url())
    sink = Recorder()
    loop = make(policy, [sink], None)
    assert type(loop).__module__ == "slate.control.loop"
    assert getattr(loop, "solve_mode", None) == "auto"  # slow solves leave the interval
    report = loop.step()
    fresh = report.conditions["TelemetryFresh"]
    assert (fresh.status, fresh.reason) == ("False", "PrometheusUnavailable")
    assert report.held_reason == "PrometheusUnavailable"
    assert report.conditions["Ready"].status == "False"
    assert [r.held_reason for r in sink.reports] == ["PrometheusUnavailable"]  # published once

    # What the operator writes into status resumes a new loop (a garbled state starts afresh).
    saved = loop.state.to_json()
    again = make(policy, [], saved)
    assert again.state.to_json() == saved
    assert make(policy, [], "{not json").state.to_json() != ""


class _AtSimTime:
    """The real loop of the closed-loop simulator, stepped at the simulator's clock."""

    def __init__(self, loop: Any) -> None:
        self.inner = loop

    @property
    def state(self) -> Any:
        return self.inner.state

    def update_policy(self, policy: Any) -> None:
        self.inner.update_policy(policy)

    def close(self) -> None:
        self.inner.close()

    def step(self, at: Any = None) -> Any:
        return self.inner.step(START)


def test_real_loop_reports_fit_quality_and_the_operator_exports_it() -> None:
    mesh = scenario_from_dict(
        {
            "name": "fit",
            "clusters": ["us-west", "us-east"],
            "rtt_ms": {"us-west": {"us-east": 10}},
            "services": {
                "cart": {
                    "replicas": {"us-west": 2, "us-east": 2},
                    "endpoints": {"get": {"service_ms": 10}},
                }
            },
            "ingress": [
                {
                    "endpoint": "cart.get",
                    "rps": {"us-west": 30, "us-east": 175},
                    "request_kb": 1,
                    "response_kb": 4,
                }
            ],
        }
    )
    _truth, _store, loop = make_loop(mesh)
    report = loop.step(START)
    assert set(report.fit_r2) == {("cart", "us-east"), ("cart", "us-west")}
    assert all(r2 <= 1.0 for r2 in report.fit_r2.values())
    assert report.fit_r2[("cart", "us-east")] > 0.5  # its load varies: the curve explains it
    assert report.to_json()["fit_r2"][0] == {
        "service": "cart",
        "cluster": "us-east",
        "r2": round(report.fit_r2[("cart", "us-east")], 4),
    }

    sinks = Recorder()

    class Sink:
        async def patch_status(self, namespace: str, name: str, status: Any) -> None:
            sinks.publish(status)

        def event(self, *args: Any) -> None:
            pass

    _truth, _store, again = make_loop(mesh)
    c = Controller(lambda p, pubs, s: _AtSimTime(again), Sink(), Sink(), lambda p, u: [])
    doc = {
        "apiVersion": "slate.dev/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "fit", "namespace": "sim", "generation": 1},
        "spec": {
            "clusters": [{"name": "us-west"}, {"name": "us-east"}],
            "services": [{"name": "cart", "port": 80}],
        },
    }
    asyncio.run(c.tick(c.observe(doc)))
    got = c.metrics.registry.get_sample_value(
        "slate_fit_r2",
        {"namespace": "sim", "policy": "fit", "service": "cart", "cluster": "us-east"},
    )
    assert got == pytest.approx(report.fit_r2[("cart", "us-east")])
