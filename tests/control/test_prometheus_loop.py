"""`slate observe` and the ControlLoop against a real Prometheus (the distribution's package),
fed by the simulator (tests/prometheus_harness.py): 10 minutes of boutique-2r's Istio metrics
backfilled with promtool, the newest samples scraped live from the simulator's exporter.

The scenario is hidden truth; the loop and `slate observe` see only a TrafficPolicy manifest
written from the scenario's clusters and services (no RTT given, so RTT must be measured).

Tolerances, chosen from what was measured (observed error in brackets):
- ingress rps: within max(3%, 4 Poisson sd over the 2m window) of the scenario's demand [~1%];
- learned calls: every separable call's per_request within 2% of the scenario's multiplicity
  [0.03%]; inseparable ones (endpoints whose demand moves in lockstep) are not compared;
- observed route splits: within 0.03 (absolute) of the truth's call rates split [<0.001];
- RTT: measured (not given by the policy), within 1 ms of the topology's [0.02 ms].
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_harness import SimulatedPrometheus, free_port
from shared_fixtures import Cli

from slate.control.loop import ControlLoop
from slate.control.publishers import CallbackPublisher, XdsPublisher
from slate.control.report import IntervalReport
from slate.evaluate import evaluate
from slate.model.policy import load_policy
from slate.model.routing import Routing
from slate.model.scenario import Scenario
from slate.model.scenario_file import load_scenario
from slate.optimizer.solve import solve
from slate.sim.istio_metrics import truth_latency_model
from slate.telemetry.prometheus import prometheus_source

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "boutique-2r.yaml"
HISTORY_S = 10 * 60
LOOKBACK = "10m"


def rel_tol(rps: float, window_s: float = 120.0) -> float:
    return max(0.03, 4.0 / math.sqrt(max(rps * window_s, 1.0)))


def policy_manifest(sc: Scenario, namespace: str = "shop") -> dict[str, Any]:
    """What a user would write for this mesh: clusters and services with their endpoints, no RTT
    (measured from telemetry), nothing about replicas, service times or calls."""
    return {
        "apiVersion": "slate.dev/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "boutique", "namespace": namespace},
        "spec": {
            "clusters": [{"name": c} for c in sc.topology.clusters],
            "services": [
                {
                    "name": s.name,
                    "port": 8080,
                    "endpoints": [
                        {"name": e.name, "match": {"pathPrefix": f"/{e.name}"}} for e in s.endpoints
                    ],
                }
                for s in sc.app.services
            ],
        },
    }


class RecordingSink:
    """Stands in for the xDS cache: remembers every routing handed to it."""

    def __init__(self) -> None:
        self.sets: list[Routing] = []

    def set_routing(self, routing: Routing) -> object:
        self.sets.append(routing)
        return None


@pytest.fixture(scope="module")
def sc() -> Scenario:
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def live(
    prometheus_factory: Callable[..., SimulatedPrometheus], sc: Scenario
) -> SimulatedPrometheus:
    routing = solve(sc, truth_latency_model(sc, "mmc")).routing  # sends some calls across
    sp = prometheus_factory(sc, routing, history_s=HISTORY_S)
    sp.wait_for_live_scrapes(2)
    return sp


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory, sc: Scenario) -> Path:
    path = tmp_path_factory.mktemp("policy") / "trafficpolicy.yaml"
    path.write_text(yaml.safe_dump(policy_manifest(sc), sort_keys=False))
    return path


def test_observe_json_matches_the_simulated_truth(
    live: SimulatedPrometheus, sc: Scenario, policy_file: Path, cli: Cli
) -> None:
    code, out, err = cli(
        "observe",
        "--policy",
        str(policy_file),
        "--prometheus",
        live.url,
        "--lookback",
        LOOKBACK,
        "--format",
        "json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["problems"] == []

    ingress = {(i["to"], i["cluster"]): i["rps"] for i in data["ingress"]}
    truth_ingress = {(d.endpoint, c): rps for d in sc.ingress for c, rps in d.rps.items() if rps}
    assert ingress.keys() == truth_ingress.keys()
    for k, rps in truth_ingress.items():
        assert ingress[k] == pytest.approx(rps, rel=rel_tol(rps)), k

    truth_calls: dict[tuple[str, str], float] = {}
    for s in sc.app.services:
        for e in s.endpoints:
            for c in e.calls:
                key = (f"{s.name}.{e.name}", c.to)
                truth_calls[key] = truth_calls.get(key, 0.0) + c.per_request
    learned = {(c["from"], c["to"]): c for c in data["calls"]}
    separable = [k for k, c in learned.items() if c["separable"]]
    # frontend.home's demand moves on its own: all its calls must be learned exactly
    home = {k for k in truth_calls if k[0] == "frontend.home"}
    assert home <= set(separable), sorted(home - set(separable))
    for k in separable:
        assert k in truth_calls, f"learned a call the mesh does not make: {k}"
        assert learned[k]["per_request"] == pytest.approx(truth_calls[k], rel=0.02), k

    ev = evaluate(sc, live.gen.routing, live.gen.latency)
    per_key: dict[tuple[str, str, str], dict[str, float]] = {}
    for (fs, fc, to, tc_), rate in ev.call_rps.items():
        per_key.setdefault((fs, fc, to), {})[tc_] = rate
    routes = {(r["from_service"], r["from_cluster"], r["to"]): r["weights"] for r in data["routes"]}
    cross = 0
    for rk, w in per_key.items():
        tot = sum(w.values())
        if tot <= 0:
            continue
        assert rk in routes, f"no observed split for {rk}"
        for tc, rps in w.items():
            assert routes[rk].get(tc, 0.0) == pytest.approx(rps / tot, abs=0.03), (rk, tc)
            cross += tc != rk[1] and rps / tot > 0.05
    assert cross > 0  # the routing sends calls across clusters, so the splits are not trivial

    a, b = sc.topology.clusters
    rtt = {(r["from"], r["to"]): r for r in data["rtt_ms"]}
    assert rtt[(a, b)]["source"] == "measured"
    assert rtt[(a, b)]["ms"] == pytest.approx(sc.topology.rtt(a, b), abs=1.0)


def test_loop_holds_the_weights_while_prometheus_is_down(
    live: SimulatedPrometheus, policy_file: Path
) -> None:
    policy = load_policy(policy_file)
    sink = RecordingSink()
    reports: list[IntervalReport] = []
    loop = ControlLoop(
        policy,
        prometheus_source(live.url, lookback_s=HISTORY_S),
        [XdsPublisher(sink), CallbackPublisher(reports.append)],
        lookback_s=HISTORY_S,
    )

    first = loop.step()
    assert first.held_reason is None, first.conditions
    assert first.conditions["TelemetryFresh"].status == "True"
    assert first.routes.routes, "no weights in force"
    assert len(sink.sets) == 1 and sink.sets[0] == Routing(first.routes.routes)
    in_force = loop.state.weights
    assert in_force == first.routes

    live.prometheus.stop()
    try:
        held = loop.step()
        assert held.held_reason == "PrometheusUnavailable"
        fresh = held.conditions["TelemetryFresh"]
        assert (fresh.status, fresh.reason) == ("False", "PrometheusUnavailable")
        assert held.conditions["Applied"].reason == "Held"
        assert held.routes == in_force
        assert loop.state.weights == in_force
        assert len(sink.sets) == 1  # nothing new reached the proxies
        assert reports[-1].held_reason == "PrometheusUnavailable"  # the status hook heard why
    finally:
        live.prometheus.start()

    again = loop.step()
    fresh = again.conditions["TelemetryFresh"]
    assert (fresh.status, fresh.reason) == ("True", "Fresh")
    assert again.held_reason != "PrometheusUnavailable"


def test_observe_with_prometheus_unreachable_exits_1_with_one_line(policy_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from slate.cli import main; sys.exit(main())",
            "observe",
            "--policy",
            str(policy_file),
            "--prometheus",
            url,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("slate: Prometheus unreachable"), lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("sig", "flags"), [("SIGTERM", []), ("SIGINT", ["--background-solve"])], ids=["TERM", "INT-bg"]
)
def test_slate_run_loops_until_signalled_then_exits_cleanly_with_its_state(
    live: SimulatedPrometheus, sc: Scenario, tmp_path: Path, sig: str, flags: list[str]
) -> None:
    """`slate run` without --once: intervals every rollout.interval (5 s here) until SIGTERM or
    SIGINT, then exit 0 with no traceback, the state saved and the route file holding the weights
    in force; a restart from that state resumes them. With --background-solve likewise (the
    worker thread is stopped on the way out)."""
    import os
    import signal
    import time

    manifest = policy_manifest(sc)
    manifest["spec"]["rollout"] = {"interval": "5s"}
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(manifest, sort_keys=False))
    state = tmp_path / "state.json"
    routes = tmp_path / "routes.json"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from slate.cli import main; sys.exit(main())",
        "run",
        "--policy",
        str(policy),
        "--prometheus",
        live.url,
        "--lookback",
        LOOKBACK,
        "--state",
        str(state),
        "--routes-file",
        str(routes),
    ]
    proc = subprocess.Popen(
        [*cmd, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        intervals = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if state.exists():
                try:
                    intervals = json.loads(state.read_text())["interval"]
                except (ValueError, KeyError):
                    intervals = 0  # read while being replaced: try again
                if intervals >= 2:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        assert intervals >= 2, "slate run did not run two intervals in 90 s"
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "every 5s" in out
    saved = json.loads(state.read_text())
    assert saved["interval"] >= 2
    weights = {
        (r["from_service"], r["from_cluster"], r["to"]): r["weights"] for r in saved["weights"]
    }
    assert weights, "no weights in force were saved"
    published = json.loads(routes.read_text())["routes"]
    assert {
        (r["from_service"], r["from_cluster"], r["to"]): r["weights"] for r in published
    } == weights

    # A restart resumes from the saved state: the interval count goes on, and its first
    # interval moves no weight by more than maxShiftPerInterval (no traffic jump).
    again = subprocess.run(
        [*cmd, "--once", "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["interval"] == saved["interval"]
    assert report["max_weight_shift"] <= 0.1 + 1e-9
