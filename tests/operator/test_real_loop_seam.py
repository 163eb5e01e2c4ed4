"""The operator's default loop factory builds slate.control's real ControlLoop (not the stand-in the
other operator tests use): an unreachable Prometheus holds the weights and says why, and the state
it saves into status resumes a new loop."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from slate.model.policy import load_policy
from slate.operator.seams import default_loop_factory

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
