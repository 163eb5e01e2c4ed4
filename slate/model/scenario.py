"""A scenario: one multi-cluster application, its topology, its demand and the objective."""

from __future__ import annotations

from dataclasses import dataclass

from slate.model.app import App
from slate.model.demand import IngressDemand
from slate.model.latency import MMcLatencyModel
from slate.model.topology import Topology


@dataclass(frozen=True)
class Objective:
    cost_weight_ms_per_usd_hour: float = 0.0
    """Minimise mean_latency_ms + this * egress_usd_per_hour."""
    max_utilization: float = 0.9
    """Hard cap on every station's utilization."""


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: Topology
    app: App
    ingress: tuple[IngressDemand, ...]
    objective: Objective = Objective()

    @property
    def total_rps(self) -> float:
        return sum(d.total_rps for d in self.ingress)

    def latency_model(self) -> MMcLatencyModel:
        """The shared model of scenario-format.md: M/M/c stations sized by replicas."""
        return MMcLatencyModel(
            {(s.name, c): n for s in self.app.services for c, n in s.replicas.items()}
        )
