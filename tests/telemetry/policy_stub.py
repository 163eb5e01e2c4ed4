"""A stand-in for slate.model.policy.TrafficPolicy (BRIEF interface 1) with the fields telemetry
reads, derived from a scenario: what a user would write for that mesh."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from slate.model.scenario import Scenario


@dataclass(frozen=True)
class StubCluster:
    name: str


@dataclass(frozen=True)
class StubEndpoint:
    name: str


@dataclass(frozen=True)
class StubService:
    name: str
    endpoints: tuple[StubEndpoint, ...]


@dataclass(frozen=True)
class StubPolicy:
    name: str
    namespace: str
    clusters: tuple[StubCluster, ...]
    services: tuple[StubService, ...]
    rtt_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)
    window_s: float = 120.0
    endpoint_label: str = "slate_endpoint"


def policy_for(
    scenario: Scenario,
    namespace: str = "shop",
    *,
    rtt_given: bool = False,
    bare: frozenset[str] = frozenset(),
    window_s: float = 120.0,
) -> StubPolicy:
    """Every service with its endpoints listed (except those in `bare`, listed as one class);
    `network.rtt` from the scenario when `rtt_given`, else none (RTT must be measured)."""
    topo = scenario.topology
    rtt: dict[tuple[str, str], float] = {}
    if rtt_given:
        cl = topo.clusters
        for i, a in enumerate(cl):
            for b in cl[i + 1 :]:
                rtt[(a, b)] = topo.rtt(a, b)
    services = tuple(
        StubService(
            s.name,
            () if s.name in bare else tuple(StubEndpoint(e.name) for e in s.endpoints),
        )
        for s in scenario.app.services
    )
    return StubPolicy(
        name=scenario.name,
        namespace=namespace,
        clusters=tuple(StubCluster(c) for c in topo.clusters),
        services=services,
        rtt_ms=rtt,
        window_s=window_s,
    )
