"""Routing + endpoints -> `ClusterLoadAssignment`: the protobuf side of the xDS views.

The weight arithmetic (which clusters get how much, integer weights, the priority-1 backstop) is
in weights.py, with no protobuf, so other publishers reuse it; it is re-exported here. This module
renders a `LocalityPlan` as one CLA with one `LocalityLbEndpoints` per cluster (locality region =
cluster name): `build_cla` as a message, `ClaWriter` as bytes joined from per-locality parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from slate.xds import wire
from slate.xds.endpoints import Endpoints
from slate.xds.weights import (  # re-exported: the weight arithmetic lives in weights.py
    BACKSTOP_PRIORITY,
    LocalityPlan,
    RouteIndex,
    destination_weights,
    integer_weights,
    locality_plan,
)

__all__ = [
    "BACKSTOP_PRIORITY",
    "CLA_TYPE_URL",
    "ClaOptions",
    "ClaWriter",
    "LocalityPlan",
    "RouteIndex",
    "build_cla",
    "destination_weights",
    "integer_weights",
    "locality_plan",
]

CLA_TYPE_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

TLS_MATCH_KEY = "envoy.transport_socket_match"
"""Metadata filter Istio's auto-mTLS matches to decide that an endpoint speaks Istio mTLS."""


@dataclass(frozen=True)
class ClaOptions:
    """How CLAs are rendered (server-wide options)."""

    weight_total: int = 10_000
    """Integer locality weights of a CLA's priority 0 sum to this."""
    istio_tls_metadata: bool = False
    """Tag every endpoint with `envoy.transport_socket_match: {tlsMode: istio}`."""


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
