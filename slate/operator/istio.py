"""Which xDS view an Istio sidecar or gateway belongs to, from the node metadata istio-agent sends.

Istio proxies identify themselves with node id `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN` (or
`router~...` for gateways) and node metadata holding `CLUSTER_ID` (the Istio cluster ID: the
cluster names in a TrafficPolicy), `NAMESPACE`, `WORKLOAD_NAME` and `LABELS` (the pod labels, with
`service.istio.io/canonical-name` and `app`). The source service of a sidecar is its canonical
service name (as in Istio's `source_canonical_service` metric label), else its `app` label, else the
workload name; gateways (`router~`) use the source service `ingress`, as routes do.

`istio_or_plain_view` tries the Istio metadata first and falls back to the plain scheme
(`node.cluster` = service, `node.locality.region` = cluster) for hand-configured Envoys, so one
server serves both.
"""

from __future__ import annotations

from typing import Any

from slate.model.routing import INGRESS
from slate.xds.views import InvalidNode, ViewKey, plain_envoy_view

CANONICAL = "service.istio.io/canonical-name"


def _field(struct: Any, key: str) -> Any:
    """A value from a protobuf Struct (or a dict in tests); None when absent."""
    fields = getattr(struct, "fields", None)
    if fields is not None:
        if key not in fields:
            return None
        value = fields[key]
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            return value.string_value
        if kind == "struct_value":
            return value.struct_value
        return None
    if isinstance(struct, dict):
        return struct.get(key)
    return None


def _clip(text: str, limit: int = 63) -> str:
    return text[:limit]


def istio_view(node: Any) -> ViewKey:
    """The view of an Istio proxy; InvalidNode when the node carries no Istio metadata."""
    meta = node.metadata
    cluster = _field(meta, "CLUSTER_ID")
    if not cluster:
        raise InvalidNode(f"node {str(node.id)[:100]!r} has no Istio CLUSTER_ID metadata")
    node_id = str(node.id)
    if node_id.startswith("router~"):
        return ViewKey(INGRESS, _clip(str(cluster)))
    labels = _field(meta, "LABELS")
    service = None
    if labels is not None:
        service = _field(labels, CANONICAL) or _field(labels, "app")
    service = service or _field(meta, "WORKLOAD_NAME")
    if not service:
        raise InvalidNode(
            f"Istio node {node_id[:100]!r} names no service (labels {CANONICAL} or app, "
            "or WORKLOAD_NAME)"
        )
    return ViewKey(_clip(str(service)), _clip(str(cluster)))


def istio_or_plain_view(node: Any) -> ViewKey:
    """Istio metadata when the node has CLUSTER_ID, else the plain scheme."""
    if _field(node.metadata, "CLUSTER_ID"):
        return istio_view(node)
    return plain_envoy_view(node)
