"""Routing + endpoints -> `ClusterLoadAssignment`: which clusters get how much, as Envoy wants it.

For a view (source service, source cluster) and an EDS resource name (a route's `to`: a service
`S`, or `S.e` for the endpoint class `e`), `destination_weights` decides the split over the
destination's clusters, and `build_cla` turns it into one CLA with one `LocalityLbEndpoints` per
cluster (locality region = cluster name):

* **Routed**: `Routing.get()` (which falls back from `S.e` to `S`). Weights on clusters where the
  destination has no endpoints are dropped and the rest renormalised.
* **Service name, routes only per endpoint**: a subscription to `S` when the routing only has
  `S.e1`, `S.e2`, ... for this source gets the plain average of those routes' normalised weights
  (every endpoint class counted once; the route file has no per-endpoint rates to weight by).
* **Unrouted** (or every routed cluster lacks endpoints): the nearest cluster(s) hosting endpoints,
  as in the route contract. The route file carries no RTTs, so nearest is the source cluster
  itself if it has endpoints; else the clusters at the smallest RTT in ENDPOINTS.yaml's optional
  `rtt_ms`; else all clusters with endpoints, equally.

Weights become integer `load_balancing_weight`s summing to `weight_total` (largest remainder; every
positive weight gets at least 1). Clusters with endpoints but no weight go to **priority 1** with
weight 1 each: a failover backstop Envoy uses only when priority 0 is unhealthy, never silently
dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from slate.model.routing import Route, Routing
from slate.xds import wire
from slate.xds.endpoints import Endpoints, EndpointSet
from slate.xds.views import ViewKey

CLA_TYPE_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

TLS_MATCH_KEY = "envoy.transport_socket_match"
"""Metadata filter Istio's auto-mTLS matches to decide that an endpoint speaks Istio mTLS."""

BACKSTOP_PRIORITY = 1


@dataclass(frozen=True)
class ClaOptions:
    """How CLAs are rendered (server-wide options)."""

    weight_total: int = 10_000
    """Integer locality weights of a CLA's priority 0 sum to this."""
    istio_tls_metadata: bool = False
    """Tag every endpoint with `envoy.transport_socket_match: {tlsMode: istio}`."""


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


def nearest_clusters(view: ViewKey, hosting: list[str], endpoints: EndpointSet) -> dict[str, float]:
    """Equal weights over the hosting clusters nearest to the view's cluster (see module doc)."""
    if view.cluster in hosting:
        return {view.cluster: 1.0}
    known = [(rtt, c) for c in hosting if (rtt := endpoints.rtt(view.cluster, c)) is not None]
    if known:
        best = min(rtt for rtt, _ in known)
        hosting = [c for rtt, c in known if rtt == best]
    return {c: 1.0 / len(hosting) for c in hosting}


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
    routed = index.route_weights(view, name) or {}
    usable = {c: w for c, w in routed.items() if w > 0 and c in by_cluster and by_cluster[c]}
    total = sum(usable.values())
    if total > 0:
        return {c: w / total for c, w in sorted(usable.items())}
    return nearest_clusters(view, hosting, endpoints)


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


def build_cla(
    name: str,
    plan: LocalityPlan,
    by_cluster: Mapping[str, Endpoints],
    options: ClaOptions,
) -> endpoint_pb2.ClusterLoadAssignment:
    """The CLA named `name` with one locality per cluster in `plan`."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for cluster, priority, weight in plan:
        loc = cla.endpoints.add()
        loc.locality.region = cluster
        loc.priority = priority
        loc.load_balancing_weight.value = weight
        _add_endpoints(loc, by_cluster[cluster], options)
    return cla


# Field numbers from envoy/config/endpoint/v3/{endpoint,endpoint_components}.proto.
_CLA_CLUSTER_NAME, _CLA_ENDPOINTS = 1, 2
_LOCALITY_WEIGHT, _LOCALITY_PRIORITY = 3, 5
_UINT32_VALUE = 1
_LOCALITY_MEMO_LIMIT = 20_000


class ClaWriter:
    """Serialised CLAs, byte for byte `build_cla(...).SerializeToString(deterministic=True)`.

    A weight update changes only each locality's weight and priority; its region and endpoints
    (the bulk of the bytes) stay. So each (cluster, endpoints) part is serialised once and a CLA
    is joined from those parts plus the weight and priority fields, which follow them in field
    number order as protobuf writes them. Endpoint tuples are recognised by identity (an
    `EndpointSet` hands out the same tuple each time), so a lookup never hashes endpoints.
    """

    def __init__(self, options: ClaOptions) -> None:
        self.options = options
        self._localities: dict[tuple[str, int], tuple[Endpoints, bytes]] = {}

    def cla(self, name: str, plan: LocalityPlan, by_cluster: Mapping[str, Endpoints]) -> bytes:
        parts = [wire.field(_CLA_CLUSTER_NAME, name.encode()) if name else b""]
        for cluster, priority, weight in plan:
            loc = (
                self._locality(cluster, by_cluster[cluster])
                + wire.field(_LOCALITY_WEIGHT, wire.varint_field(_UINT32_VALUE, weight))
                + wire.varint_field(_LOCALITY_PRIORITY, priority)
            )
            parts.append(wire.field(_CLA_ENDPOINTS, loc))
        return b"".join(parts)

    def _locality(self, cluster: str, endpoints: Endpoints) -> bytes:
        key = (cluster, id(endpoints))
        got = self._localities.get(key)
        if got is not None and got[0] is endpoints:
            return got[1]
        loc = endpoint_components_pb2.LocalityLbEndpoints()
        loc.locality.region = cluster
        _add_endpoints(loc, endpoints, self.options)
        raw: bytes = loc.SerializeToString(deterministic=True)
        if len(self._localities) >= _LOCALITY_MEMO_LIMIT:
            self._localities.clear()
        self._localities[key] = (endpoints, raw)
        return raw


def _add_endpoints(
    loc: endpoint_components_pb2.LocalityLbEndpoints, endpoints: Endpoints, options: ClaOptions
) -> None:
    for ep in endpoints:
        lb = loc.lb_endpoints.add()
        lb.endpoint.address.CopyFrom(_socket_address(ep.host, ep.port))
        if options.istio_tls_metadata:
            lb.metadata.CopyFrom(_ISTIO_TLS_METADATA)


def _socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(
            protocol=address_pb2.SocketAddress.TCP, address=host, port_value=port
        )
    )


def _istio_tls_metadata() -> base_pb2.Metadata:
    md = base_pb2.Metadata()
    md.filter_metadata[TLS_MATCH_KEY].CopyFrom(
        struct_pb2.Struct(fields={"tlsMode": struct_pb2.Value(string_value="istio")})
    )
    return md


_ISTIO_TLS_METADATA = _istio_tls_metadata()
