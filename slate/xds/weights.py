"""The weight arithmetic of the xDS views, with no protobuf: reusable by any publisher.

For a view (source service, source cluster) and a destination name (a route's `to`: a service `S`
or an endpoint class `S.e`), `destination_weights` decides the split over the destination's
clusters; `integer_weights` turns a split into integers summing to a total (10,000 for Envoy
locality weights; 100 for an Istio DestinationRule's `localityLbSetting.distribute`), and
`locality_plan` adds the priority-1 backstop: every cluster with endpoints but no weight, weight 1,
used only when priority 0 is unhealthy. The CLA code (resources.py) renders a plan as protobuf.

The rules (see docs/xds.md, "From routing to a CLA"):

* **Routed**: `Routing.get()` (which falls back from `S.e` to `S`). Weights on clusters where the
  destination has no endpoints are dropped and the rest renormalised.
* **Service name, routes only per endpoint**: the plain average of those routes' normalised
  weights (each endpoint class counts once).
* **Unrouted** (or every routed cluster lacks endpoints): the nearest cluster(s) hosting endpoints:
  the source cluster itself if it has endpoints; else the clusters at the smallest RTT in the
  endpoints' optional `rtt_ms`, equally; else all clusters with endpoints, equally.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from slate.model.keys import split_or_nearest
from slate.model.routing import Route, Routing
from slate.xds.endpoints import Endpoints, EndpointSet
from slate.xds.views import ViewKey

BACKSTOP_PRIORITY = 1


def integer_weights(weights: Mapping[str, float], total: int = 10_000) -> dict[str, int]:
    """Non-negative weights -> integers summing to `total`, by largest remainder.

    Zero (and non-finite) weights are left out; every positive weight gets at least 1, which is
    taken back from the most over-rounded others. Ties break by name, so the result is stable.
    """
    positive = {c: w for c, w in weights.items() if w > 0 and math.isfinite(w)}
    if not positive:
        return {}
    if len(positive) > total:
        raise ValueError(f"cannot give {len(positive)} positive weights at least 1 out of {total}")
    s = sum(positive.values())
    exact = {c: w / s * total for c, w in positive.items()}
    ints = {c: max(1, math.floor(x)) for c, x in exact.items()}
    short = total - sum(ints.values())
    if short > 0:
        # Largest fractional remainder first.
        order = sorted(exact, key=lambda c: (-(exact[c] - ints[c]), c))
        for c in order[:short]:
            ints[c] += 1
    while short < 0:
        # Take back from the weight rounded up the most, never below 1.
        c = min((c for c in ints if ints[c] > 1), key=lambda c: (exact[c] - ints[c], c))
        ints[c] -= 1
        short += 1
    return ints


class RouteIndex:
    """A Routing plus the lookups the xDS views need (built once per routing update)."""

    def __init__(self, routing: Routing) -> None:
        self.routing = routing
        by_service: dict[tuple[str, str, str], list[Route]] = defaultdict(list)
        by_source: dict[tuple[str, str], set[str]] = defaultdict(set)
        for r in routing.routes:
            by_source[(r.from_service, r.from_cluster)].add(r.to)
            if "." in r.to:
                service = r.to.split(".", 1)[0]
                by_service[(r.from_service, r.from_cluster, service)].append(r)
        self._endpoint_routes = dict(by_service)
        self._destinations = {k: frozenset(v) for k, v in by_source.items()}
        self.sources = frozenset(r.from_service for r in routing.routes)
        """Source services with routes."""
        self.clusters = frozenset(c for r in routing.routes for c in (r.from_cluster, *r.weights))
        """Clusters the routing names (as sources or destinations)."""

    def route_weights(self, view: ViewKey, name: str) -> dict[str, float] | None:
        """Normalised weights routed for `name` from `view`, or None if nothing is routed."""
        route = self.routing.get(view.service, view.cluster, name)
        if route is not None:
            return route.normalized()
        if "." in name:
            return None
        per_endpoint = self._endpoint_routes.get((view.service, view.cluster, name), [])
        splits = [w for w in (r.normalized() for r in per_endpoint) if w]
        if not splits:
            return None
        avg: dict[str, float] = defaultdict(float)
        for split in splits:
            for c, w in split.items():
                avg[c] += w / len(splits)
        return dict(avg)

    def destinations(self, view: ViewKey) -> frozenset[str]:
        """Every `to` routed from this view."""
        return self._destinations.get((view.service, view.cluster), frozenset())


def destination_weights(
    index: RouteIndex, endpoints: EndpointSet, view: ViewKey, name: str
) -> dict[str, float] | None:
    """Normalised weights over clusters with endpoints, or None if `name`'s service is unknown.

    An empty dict means the service is known but has no endpoints anywhere.
    """
    by_cluster = endpoints.clusters_of(name.split(".", 1)[0])
    if by_cluster is None:
        return None
    hosting = sorted(c for c, eps in by_cluster.items() if eps)
    if not hosting:
        return {}
    split = split_or_nearest(endpoints, view.cluster, hosting, index.route_weights(view, name))
    return dict(sorted(split))


LocalityPlan = tuple[tuple[str, int, int], ...]
"""((cluster, priority, integer weight), ...) in wire order: what a CLA's localities will be."""


def locality_plan(
    weights: Mapping[str, float], by_cluster: Mapping[str, Endpoints], total: int
) -> LocalityPlan:
    """Priority 0 with integer weights for routed clusters, priority 1 (weight 1) for the rest."""
    ints = integer_weights(weights, total)
    plan = [(c, 0, w) for c, w in sorted(ints.items())]
    plan += [
        (c, BACKSTOP_PRIORITY, 1) for c in sorted(by_cluster) if by_cluster[c] and c not in ints
    ]
    return tuple(plan)


def view_plan(
    routing: Routing | RouteIndex,
    endpoints: EndpointSet,
    view: ViewKey,
    name: str,
    total: int = 10_000,
) -> LocalityPlan | None:
    """The locality plan of `name` as seen from `view`, or None if its service is unknown:
    everything a publisher needs, in one call (builds a RouteIndex if given a Routing)."""
    index = routing if isinstance(routing, RouteIndex) else RouteIndex(routing)
    by_cluster = endpoints.clusters_of(name.split(".", 1)[0])
    weights = destination_weights(index, endpoints, view, name)
    if by_cluster is None or weights is None:
        return None
    return locality_plan(weights, by_cluster, total)
