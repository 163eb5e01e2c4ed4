"""Capacity: whether the demand can fit under `max_utilization` at all, and by how much it cannot.

The total request rate reaching each endpoint (summed over clusters) does not depend on routing: it
is fixed by the ingress demand and the call multipliers of the DAG. So is each service's total work.
Routing only chooses where that work lands, and splitting every call by capacity (replica count)
puts every station of a service at the same utilization, `work / total capacity`. Hence the demand
fits iff every service's `work / total capacity <= max_utilization`, and the least overloaded
routing gives each short service exactly that utilization everywhere.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from slate.model.latency import LatencyModel
from slate.model.scenario import Scenario


def endpoint_totals(scenario: Scenario) -> dict[str, float]:
    """Requests per second reaching each endpoint, summed over clusters (routing-independent)."""
    app = scenario.app
    total: dict[str, float] = defaultdict(float)
    for d in scenario.ingress:
        total[d.endpoint] += d.total_rps
    for eid in app.topo_order:
        x = total.get(eid, 0.0)
        for call in app.endpoint(eid).calls:
            total[call.to] += x * call.per_request
    return dict(total)


@dataclass(frozen=True)
class Shortfall:
    """A service whose total work does not fit under `max_utilization` in all its clusters."""

    service: str
    work_ms_per_s: float
    capacity_ms_per_s: float  # at utilization 1, summed over its clusters
    max_utilization: float

    @property
    def min_utilization(self) -> float:
        """The lowest max-utilization any routing can give this service."""
        return self.work_ms_per_s / self.capacity_ms_per_s

    @property
    def excess_fraction(self) -> float:
        """How much of the demand is too much: the share to shed to fit under the cap."""
        return 1.0 - self.max_utilization / self.min_utilization

    def describe(self) -> str:
        need = self.work_ms_per_s / self.max_utilization
        return (
            f"{self.service} needs {self.work_ms_per_s:.0f} ms/s of work, but its clusters give "
            f"{self.capacity_ms_per_s * self.max_utilization:.0f} ms/s at max_utilization "
            f"{self.max_utilization:g} (utilization {self.min_utilization:.3f} at best): "
            f"{self.excess_fraction:.1%} of its demand is too much, or it needs "
            f"{need / self.capacity_ms_per_s - 1:.1%} more capacity"
            + ("; it saturates under any routing" if self.min_utilization >= 1 else "")
        )


def shortfalls(scenario: Scenario, latency: LatencyModel | None = None) -> list[Shortfall]:
    latency = latency or scenario.latency_model()
    totals = endpoint_totals(scenario)
    cap = scenario.objective.max_utilization
    out = []
    for svc in scenario.app.services:
        work = sum(totals.get(e.id, 0.0) * e.service_ms for e in svc.endpoints)
        if work <= 0 or not svc.clusters:
            continue
        capacity = sum(latency.station(svc.name, c).capacity for c in svc.clusters)
        if work > cap * capacity * (1 + 1e-12):
            out.append(Shortfall(svc.name, work, capacity, cap))
    return out
