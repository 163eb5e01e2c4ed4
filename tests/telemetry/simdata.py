"""Simulated telemetry for the telemetry tests: a scenario as truth, a routing, a filled store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from slate.evaluate import Evaluation, evaluate
from slate.model.routing import Routing
from slate.model.scenario import Scenario
from slate.model.scenario_file import load_scenario
from slate.optimizer.solve import solve
from slate.sim.istio_metrics import IstioMetrics, Truth, truth_latency_model
from slate.telemetry.memory import MemoryBackend

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
T0 = 1_760_000_000.0  # a fixed past instant: unit tests never depend on the clock


def scenario(name: str = "boutique-2r") -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.yaml")


def optimal_routing(sc: Scenario, truth: Truth = "mmc") -> Routing:
    """The optimum: feasible, and it sends some calls across clusters (so RTT is measurable)."""
    return solve(sc, truth_latency_model(sc, truth)).routing


@dataclass
class Sim:
    scenario: Scenario
    routing: Routing
    gen: IstioMetrics
    store: MemoryBackend
    end: float

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.end, UTC)

    def truth(self) -> Evaluation:
        return evaluate(self.scenario, self.routing, self.gen.latency)


def simulate(
    sc: Scenario,
    routing: Routing,
    *,
    truth: Truth = "mmc",
    seed: int = 1,
    minutes: float = 40,
    step: float = 15.0,
    start: float = T0,
    drift: float = 0.0,
    pods: int = 1,
    buckets: bool = False,
) -> Sim:
    gen = IstioMetrics(
        sc,
        routing,
        truth=truth,
        seed=seed,
        namespace="shop",
        drift=drift,
        pods_per_station=pods,
        buckets=buckets,
    )
    store = MemoryBackend()
    end = start + minutes * 60
    gen.run(store, start, end, step)
    return Sim(sc, routing, gen, store, end)
