"""Builders for requests, routings and endpoint sets, and readers for responses (unit tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from slate.model.routing import Routing, routing_from_json
from slate.xds.endpoints import Endpoint, EndpointSet
from slate.xds.resources import CLA_TYPE_URL
from slate.xds.views import ViewKey

WEST = ViewKey("frontend", "us-west")
EAST = ViewKey("frontend", "us-east")


def node(service: str = "frontend", region: str = "us-west", node_id: str = "n1") -> Any:
    n = base_pb2.Node(id=node_id, cluster=service)
    n.locality.region = region
    return n


def sotw(
    names: list[str] | None = None,
    *,
    nonce: str = "",
    version: str = "",
    error: str | None = None,
    with_node: Any = None,
    type_url: str = CLA_TYPE_URL,
) -> Any:
    req = discovery_pb2.DiscoveryRequest(
        resource_names=names or [], response_nonce=nonce, version_info=version, type_url=type_url
    )
    if with_node is not None:
        req.node.CopyFrom(with_node)
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def delta(
    subscribe: list[str] | None = None,
    unsubscribe: list[str] | None = None,
    *,
    nonce: str = "",
    error: str | None = None,
    with_node: Any = None,
    initial: Mapping[str, str] | None = None,
    type_url: str = CLA_TYPE_URL,
) -> Any:
    req = discovery_pb2.DeltaDiscoveryRequest(
        resource_names_subscribe=subscribe or [],
        resource_names_unsubscribe=unsubscribe or [],
        response_nonce=nonce,
        type_url=type_url,
        initial_resource_versions=initial or {},
    )
    if with_node is not None:
        req.node.CopyFrom(with_node)
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def routing(*routes: tuple[str, str, str, dict[str, float]]) -> Routing:
    return routing_from_json(
        {
            "routes": [
                {"from_service": s, "from_cluster": c, "to": to, "weights": w}
                for s, c, to, w in routes
            ]
        }
    )


def endpoints(services: dict[str, dict[str, int]], port: int = 8080) -> EndpointSet:
    """{service: {cluster: n endpoints}} with distinct fake IPs."""
    out: dict[str, dict[str, tuple[Endpoint, ...]]] = {}
    for si, (svc, clusters) in enumerate(sorted(services.items())):
        out[svc] = {
            c: tuple(Endpoint(f"10.{si}.{ci}.{j + 1}", port) for j in range(n))
            for ci, (c, n) in enumerate(sorted(clusters.items()))
        }
    return EndpointSet(out)


def split_routing(west: dict[str, float], east: dict[str, float], to: str = "cart") -> Routing:
    return routing(("frontend", "us-west", to, west), ("frontend", "us-east", to, east))


def cla_weights(cla: Any) -> dict[str, tuple[int, int]]:
    """{region: (priority, weight)} of a ClusterLoadAssignment."""
    return {
        loc.locality.region: (loc.priority, loc.load_balancing_weight.value)
        for loc in cla.endpoints
    }


def parse_sotw(payload: bytes) -> tuple[Any, dict[str, Any]]:
    """(DiscoveryResponse, {name: CLA})."""
    resp = discovery_pb2.DiscoveryResponse.FromString(payload)
    clas = {}
    for any_msg in resp.resources:
        assert any_msg.type_url == CLA_TYPE_URL
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(any_msg.value)
        clas[cla.cluster_name] = cla
    return resp, clas


def parse_delta(payload: bytes) -> tuple[Any, dict[str, tuple[str, Any]]]:
    """(DeltaDiscoveryResponse, {name: (version, CLA)})."""
    resp = discovery_pb2.DeltaDiscoveryResponse.FromString(payload)
    out = {}
    for r in resp.resources:
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(r.resource.value)
        assert cla.cluster_name == r.name
        out[r.name] = (r.version, cla)
    return resp, out
