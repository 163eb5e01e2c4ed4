"""Checking a route file against the scenario it is meant for."""

from __future__ import annotations

from slate.model.errors import InputError, quote
from slate.model.routing import INGRESS, Routing
from slate.model.scenario import Scenario


def check_routing(routing: Routing, scenario: Scenario, source: str | None = None) -> None:
    """Raise InputError at the first route that does not fit the scenario."""
    app, clusters = scenario.app, scenario.topology.clusters
    for i, r in enumerate(routing.routes):
        path = f"routes[{i}]"
        try:
            if r.from_service != INGRESS and not app.has_service(r.from_service):
                raise InputError(f"{path}.from_service", f"unknown service {quote(r.from_service)}")
            if r.from_cluster not in clusters:
                raise InputError(f"{path}.from_cluster", f"unknown cluster {quote(r.from_cluster)}")
            if r.to in app.endpoints:
                svc = app.service_of(r.to)
            elif app.has_service(r.to):
                svc = app.service(r.to)
            else:
                raise InputError(f"{path}.to", f"unknown endpoint or service {quote(r.to)}")
            for c in r.weights:
                if c not in clusters:
                    raise InputError(f"{path}.weights.{c}", f"unknown cluster {quote(c)}")
                if c not in svc.replicas and r.weights[c] > 0:
                    raise InputError(
                        f"{path}.weights.{c}",
                        f"service {quote(svc.name)} is not deployed in {quote(c)}",
                    )
        except InputError as e:
            raise (e.with_source(source) if source else e) from None
