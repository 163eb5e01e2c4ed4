"""`slate simulate SCENARIO --closed-loop`: the control loop against a scenario as hidden truth.

The truth (slate/sim/istio_metrics.py) plays the mesh under the weights in force and writes Istio's
metrics into an in-memory store; the loop reads them through the same queries and parsing as a
real Prometheus (slate/telemetry/observe.py; only HTTP differs) and publishes weights, which the
truth applies from the next interval on. What the loop is handed is exactly:

- a TelemetrySource (the Observer over the store): no scenario object;
- a TrafficPolicy derived from the scenario's clusters, RTT, egress prices, objective and the
  rollout limits (`policy_from_scenario`);
- where each service runs (service -> clusters), what `slate run` reads from its endpoints file:
  never replica counts, service times or the call graph.

Each interval is judged by the truth (slate/evaluate.py with the truth's latency model) against
the truth's optimum for that interval's demand. Output: closed-loop.md.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from slate.control.loop import ControlLoop
from slate.control.report import IntervalReport
from slate.evaluate import evaluate
from slate.model.errors import InputError
from slate.model.policy import (
    EndpointMatch,
    PolicyCluster,
    PolicyEndpoint,
    PolicyService,
    TrafficPolicy,
)
from slate.model.routing import Routing
from slate.model.scenario import Scenario
from slate.optimizer import baselines
from slate.optimizer.solve import solve
from slate.sim.istio_metrics import IstioMetrics
from slate.telemetry.memory import MemoryBackend
from slate.telemetry.observe import Observer

Truth = Literal["mmc", "distorted"]
START = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
INTERVAL_S = 30.0
WINDOW_S = 30.0
SCRAPE_S = 15.0
LOOKBACK_S = 1800.0
WARMUP_S = 300.0
"""History written before the loop's first interval (the mesh ran before slate was started)."""


@dataclass(frozen=True)
class DemandStep:
    interval: int
    cluster: str
    factor: float

    @staticmethod
    def parse(text: str) -> DemandStep:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"--demand-step must be INTERVAL:CLUSTER:FACTOR, got {text!r}")
        try:
            interval, factor = int(parts[0]), float(parts[2])
        except ValueError:
            raise ValueError(
                f"--demand-step must be INTERVAL:CLUSTER:FACTOR, got {text!r}"
            ) from None
        if interval < 0 or not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"--demand-step: interval >= 0 and factor > 0, got {text!r}")
        return DemandStep(interval, parts[1], factor)


@dataclass
class IntervalRow:
    interval: int
    objective: float | None
    mean_latency_ms: float | None
    egress_usd_per_hour: float
    max_utilization: float
    optimum_objective: float
    max_weight_shift: float
    exploring: bool
    routes: Routing
    held_reason: str | None = None
    solve_seconds: float = 0.0
    loop_seconds: float = 0.0

    @property
    def gap(self) -> float | None:
        if self.objective is None:
            return None
        return (self.objective - self.optimum_objective) / self.optimum_objective

    def to_json(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "objective": _num(self.objective, 4),
            "mean_latency_ms": _num(self.mean_latency_ms, 4),
            "egress_usd_per_hour": round(self.egress_usd_per_hour, 6),
            "max_utilization": round(self.max_utilization, 4),
            "optimum_objective": round(self.optimum_objective, 4),
            "max_weight_shift": round(self.max_weight_shift, 6),
            "exploring": self.exploring,
            "held_reason": self.held_reason,
            "routes": self.routes.to_json()["routes"],
        }


@dataclass
class ClosedLoopResult:
    scenario: str
    truth: Truth
    seed: int
    max_shift: float
    rows: list[IntervalRow] = field(default_factory=list)
    reports: list[IntervalReport] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "truth": self.truth,
            "seed": self.seed,
            "max_shift": self.max_shift,
            "intervals": [r.to_json() for r in self.rows],
        }

    def table(self) -> str:
        head = (
            f"{'int':>3} {'objective':>10} {'optimum':>9} {'gap':>8} {'max util':>8} "
            f"{'shift':>6} {'expl':>4}  held"
        )
        lines = [
            f"closed loop: {self.scenario} truth={self.truth} seed={self.seed} "
            f"max_shift={self.max_shift:g}",
            head,
        ]
        for r in self.rows:
            obj = "overload" if r.objective is None else f"{r.objective:10.2f}"
            gap = "-" if r.gap is None else f"{100 * r.gap:7.2f}%"
            lines.append(
                f"{r.interval:>3} {obj:>10} {r.optimum_objective:9.2f} {gap:>8} "
                f"{r.max_utilization:8.3f} {r.max_weight_shift:6.3f} "
                f"{'yes' if r.exploring else 'no':>4}  {r.held_reason or ''}"
            )
        return "\n".join(lines)


def policy_from_scenario(
    scenario: Scenario,
    *,
    max_shift: float = 0.1,
    interval_s: float = INTERVAL_S,
    unlisted_rtt: Sequence[tuple[str, str]] = (),
) -> TrafficPolicy:
    """What a TrafficPolicy would tell the loop about this scenario: clusters, RTT, egress prices,
    the objective and the rollout. Nothing about replicas, service times or calls. Cluster pairs
    in `unlisted_rtt` are left out of `network.rtt` (the loop measures or explores them)."""
    topo = scenario.topology
    clusters = tuple(PolicyCluster(c, c) for c in topo.clusters)
    services = tuple(
        PolicyService(
            s.name,
            8080,
            tuple(PolicyEndpoint(e.name, EndpointMatch(None, f"/{e.name}")) for e in s.endpoints),
        )
        for s in scenario.app.services
    )
    unlisted = {frozenset(p) for p in unlisted_rtt}
    rtt = {
        (a, b): topo.rtt(a, b)
        for i, a in enumerate(topo.clusters)
        for b in topo.clusters[i + 1 :]
        if frozenset((a, b)) not in unlisted
    }
    prices = {
        (a, b): topo.egress_price(a, b) for a in topo.clusters for b in topo.clusters if a != b
    }
    return TrafficPolicy(
        name=scenario.name.replace("_", "-").lower()[:63] or "sim",
        namespace="sim",
        clusters=clusters,
        services=services,
        rtt_ms=rtt,
        egress_default_usd_per_gb=0.0,
        egress_usd_per_gb=prices,
        cost_weight_ms_per_usd_hour=scenario.objective.cost_weight_ms_per_usd_hour,
        max_utilization=scenario.objective.max_utilization,
        interval_s=interval_s,
        max_shift_per_interval=max_shift,
        min_local_share=0.0,
        window_s=WINDOW_S,
    )


def deployment_of(scenario: Scenario) -> dict[str, tuple[str, ...]]:
    """Where each service runs (what an endpoints file says): no sizes."""
    return {s.name: tuple(s.clusters) for s in scenario.app.services}


def make_loop(
    scenario: Scenario,
    *,
    seed: int = 1,
    truth: Truth = "mmc",
    max_shift: float = 0.1,
    unlisted_rtt: Sequence[tuple[str, str]] = (),
) -> tuple[IstioMetrics, MemoryBackend, ControlLoop]:
    """The truth (playing the scenario under local routing, with WARMUP_S of history written) and
    a control loop that sees only its metrics, a policy (without the RTT of `unlisted_rtt`'s
    pairs) and where services run."""
    routing = baselines.local_routing(scenario)
    policy = policy_from_scenario(scenario, max_shift=max_shift, unlisted_rtt=unlisted_rtt)
    mesh = IstioMetrics(
        scenario,
        routing,
        truth=truth,
        seed=seed,
        buckets=False,
        namespace=policy.namespace,
        endpoint_label=policy.endpoint_label,
    )
    store = MemoryBackend(retention_s=LOOKBACK_S + 4 * WINDOW_S + WARMUP_S)
    t0 = START.timestamp()
    mesh.run(store, t0 - WARMUP_S, t0, SCRAPE_S)
    loop = ControlLoop(
        policy,
        Observer(store, lookback_s=LOOKBACK_S, step_s=INTERVAL_S),
        deployment=deployment_of(scenario),
    )
    return mesh, store, loop


def run_closed_loop(
    scenario: Scenario,
    *,
    intervals: int = 30,
    seed: int = 1,
    truth: Truth = "mmc",
    demand_steps: Sequence[DemandStep] = (),
    start: Literal["local"] = "local",
    max_shift: float = 0.1,
) -> ClosedLoopResult:
    if start != "local":
        raise ValueError("--start: only 'local' is supported")
    for step in demand_steps:
        if step.cluster not in scenario.topology.clusters:
            raise ValueError(f"--demand-step: no cluster {step.cluster!r} in the scenario")
    mesh, store, loop = make_loop(scenario, seed=seed, truth=truth, max_shift=max_shift)
    routing = mesh.routing
    result = ClosedLoopResult(scenario.name, truth, seed, max_shift)
    optimum_cache: dict[tuple[float, ...], float] = {}
    in_force = routing
    prev = routing
    t = START.timestamp()
    for i in range(intervals):
        for step in demand_steps:
            if step.interval == i:
                mesh.scale_demand(step.cluster, step.factor)
        # The interval runs under the weights in force; the truth scrapes as it goes.
        mesh.set_routing(in_force)
        mesh.run(store, t + SCRAPE_S, t + INTERVAL_S, SCRAPE_S)
        t += INTERVAL_S
        judged = mesh.demand_scenario()
        ev = evaluate(judged, in_force, mesh.latency)
        key = tuple(round(float(x), 6) for x in mesh.nominal * mesh._scale)
        if key not in optimum_cache:
            optimum_cache[key] = solve(judged, mesh.latency).evaluation.objective
        # The loop runs at the end of the interval, and its weights are in force from the next.
        report = loop.step(datetime.fromtimestamp(t, UTC))
        shift = _shift(prev, in_force) if i > 0 else 0.0
        result.rows.append(
            IntervalRow(
                interval=i,
                objective=ev.objective if ev.feasible else None,
                mean_latency_ms=ev.mean_latency_ms if ev.feasible else None,
                egress_usd_per_hour=ev.egress_usd_per_hour,
                max_utilization=ev.max_utilization,
                optimum_objective=optimum_cache[key],
                max_weight_shift=shift,
                exploring=report.exploring,
                routes=in_force,
                held_reason=report.held_reason,
                solve_seconds=report.solve_seconds,
                loop_seconds=report.timings.total_s,
            )
        )
        result.reports.append(report)
        prev = in_force
        if report.routes.routes:
            in_force = report.routes
    return result


def _shift(a: Routing, b: Routing) -> float:
    from slate.control.loop import _routing_shift

    return _routing_shift(a, b)


def _num(x: float | None, nd: int) -> float | None:
    if x is None or math.isinf(x) or math.isnan(x):
        return None
    return round(x, nd)


def dumps(result: ClosedLoopResult) -> str:
    return json.dumps(result.to_json(), indent=1)


def cmd_simulate_closed_loop(args: argparse.Namespace) -> int:
    from slate.model.scenario_file import load_scenario

    if args.intervals < 1 or args.intervals > 10_000:
        raise InputError("--intervals", f"must be in 1..10000, got {args.intervals}")
    if not (0 < args.max_shift <= 1):
        raise InputError("--max-shift", f"must be in (0, 1], got {args.max_shift}")
    steps = []
    for text in args.demand_step:
        try:
            steps.append(DemandStep.parse(text))
        except ValueError as e:
            raise InputError("--demand-step", str(e)) from None
    scenario = load_scenario(args.scenario)
    for s in steps:
        if s.cluster not in scenario.topology.clusters:
            raise InputError("--demand-step", f"no cluster {s.cluster!r} in {args.scenario}")
    result = run_closed_loop(
        scenario,
        intervals=args.intervals,
        seed=args.seed,
        truth=args.truth,
        demand_steps=steps,
        start=args.start,
        max_shift=args.max_shift,
    )
    print(dumps(result) if args.format == "json" else result.table())
    return 0
