"""Which view a proxy gets: the node -> view-key mapping.

A *view* is everything one group of proxies should see: the `ClusterLoadAssignment`s computed for
one source service in one source cluster. All sidecars of a service in a cluster share a view, so
the server builds and serialises each view's resources once and sends the same bytes to all of them.

The mapping from an Envoy `Node` to a `ViewKey` is a plain function so that other deployments can
plug in their own: `plain_envoy_view` reads what a hand-configured Envoy sets (`--service-cluster`
and the bootstrap locality); an Istio mapping (node metadata such as the workload's `app` label and
`CLUSTER_ID`) belongs to the operator and only needs to be another `NodeMapper`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from slate.model.routing import INGRESS


class ViewKey(NamedTuple):
    """The source service and source cluster whose routes a proxy enforces.

    A named tuple rather than a dataclass: it keys the cache's dicts and is hashed on every
    lookup of every stream's push, and a tuple hashes and compares in C."""

    service: str
    cluster: str

    def __str__(self) -> str:
        return f"{self.service}@{self.cluster}"


class InvalidNode(ValueError):
    """The node of a stream does not say which view it belongs to (the stream is refused)."""


NodeMapper = Callable[[Any], ViewKey]
"""Maps an `envoy.config.core.v3.Node` to its view; raises `InvalidNode` if it cannot."""


def plain_envoy_view(node: Any) -> ViewKey:
    """The view of a plain Envoy: `node.cluster` = source service, `node.locality.region` = cluster.

    Gateways use the source service `ingress`, as in the route file.
    """
    service = str(node.cluster)
    region = str(node.locality.region)
    if not service:
        raise InvalidNode(
            f"node.cluster is empty (node id {node.id!r}): set it to the source service "
            f"(e.g. envoy --service-cluster frontend, or {INGRESS!r} for a gateway)"
        )
    if not region:
        raise InvalidNode(
            f"node.locality.region is empty (node id {node.id!r}): set it to the source cluster"
        )
    return ViewKey(service, region)


XDSTP = "xdstp://"


def local_name(name: str) -> str:
    """The plain resource name behind an `xdstp://` one (xDS federation), else `name` itself.

    `xdstp://AUTHORITY/TYPE/ID[?PARAMS]` names the resource ID of TYPE at AUTHORITY; slate serves
    the ID as if it had been asked by its plain name (a route's `to`, a service), under the full
    name the client used. IDs are the last path segment (`.../ClusterLoadAssignment/cart.list`).
    """
    if not name.startswith(XDSTP):
        return name
    path = name[len(XDSTP) :].split("?", 1)[0].split("#", 1)[0]
    return path.rsplit("/", 1)[-1] if "/" in path else ""


def service_of(name: str) -> str:
    """The service a resource name is about: `cart` for `cart`, `cart.list` and their xdstp
    forms."""
    return local_name(name).split(".", 1)[0]
