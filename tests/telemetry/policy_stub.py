"""The TrafficPolicy a user would write for a scenario's mesh, with the fields telemetry reads
(slate.model.policy's value, built directly rather than parsed from a manifest)."""

from __future__ import annotations

from slate.model.policy import (
    EndpointMatch,
    PolicyCluster,
    PolicyEndpoint,
    PolicyService,
    TrafficPolicy,
)
from slate.model.scenario import Scenario


def policy_for(
    scenario: Scenario,
    namespace: str = "shop",
    *,
    rtt_given: bool = False,
    bare: frozenset[str] = frozenset(),
    window_s: float = 120.0,
) -> TrafficPolicy:
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
        PolicyService(
            s.name,
            8080,
            ()
            if s.name in bare
            else tuple(
                PolicyEndpoint(e.name, EndpointMatch(None, f"/{e.name}")) for e in s.endpoints
            ),
        )
        for s in scenario.app.services
    )
    return TrafficPolicy(
        name=scenario.name,
        namespace=namespace,
        clusters=tuple(PolicyCluster(c, c) for c in topo.clusters),
        services=services,
        rtt_ms=rtt,
        window_s=window_s,
    )
