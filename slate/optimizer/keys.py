"""Route keys: what one proxy can enforce.

A key is (source service, source cluster, destination endpoint). Ingress gateways are the source
service `ingress`. Every key that can carry traffic under some routing is enumerated here, in a
deterministic order, so all policies print routes for the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from slate.model.routing import INGRESS
from slate.model.scenario import Scenario


@dataclass(frozen=True, order=True)
class RouteKey:
    from_service: str
    from_cluster: str
    to: str  # destination endpoint id


def route_keys(scenario: Scenario) -> list[RouteKey]:
    keys: dict[RouteKey, None] = {}
    for d in scenario.ingress:
        for c in d.rps:
            keys[RouteKey(INGRESS, c, d.endpoint)] = None
    app = scenario.app
    for svc in app.services:
        callees = {call.to: None for e in svc.endpoints for call in e.calls}
        for c in svc.clusters:
            for dst in callees:
                keys[RouteKey(svc.name, c, dst)] = None
    return list(keys)
