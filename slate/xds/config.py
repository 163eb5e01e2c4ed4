"""Listeners, routes and clusters generated from the same routing and endpoints as the CLAs.

For **proxyless gRPC** (a client dialling `xds:///SERVICE`) and for an **Envoy that takes its
clusters from slate**, per destination service `S` (every service in the endpoints):

* Listener `S`: an API listener (what gRPC asks for: the target's name) whose HTTP connection
  manager takes route configuration `S` over ADS and ends in the router filter.
* RouteConfiguration `S`: one virtual host for any authority; one route per endpoint class `e` of
  `S` that has a request match (ENDPOINTS.yaml `services.S.endpoints.e: {path_prefix, method}`)
  to cluster `S.e`, then a catch-all route to cluster `S`.
* Cluster `S` and `S.e`: EDS over ADS with `service_name` = the cluster name (so the CLA of the
  same name carries the routing's locality weights), round robin, and
  `common_lb_config.locality_weighted_lb_config` (Envoy ignores locality weights without it).

None of these depend on the view (the weights live in the CLAs), so each is built once per name.
Wildcard subscriptions: Clusters get every name a wildcard EDS subscription would get (the
services and the endpoint classes routed from the view); Listeners and RouteConfigurations get
none, since slate's listeners are API listeners for clients that ask for them by name (an Envoy
asking for all listeners gets an empty set, not listeners it cannot use).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2

from slate.xds.endpoints import EndpointSet
from slate.xds.resources import CLA_TYPE_URL
from slate.xds.views import local_name

LISTENER_TYPE_URL = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE_URL = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
SERVED_TYPES = (LISTENER_TYPE_URL, ROUTE_TYPE_URL, CLUSTER_TYPE_URL, CLA_TYPE_URL)
FULL_STATE_TYPES = frozenset({LISTENER_TYPE_URL, CLUSTER_TYPE_URL})
"""Types whose SotW responses must carry every subscribed resource (absence means removal)."""


def _ads() -> config_source_pb2.ConfigSource:
    src = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    src.ads.SetInParent()
    return src


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def listener(name: str, service: str) -> bytes:
    """The API listener `name` for clients of `service`."""
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=service)
    manager.rds.config_source.CopyFrom(_ads())
    manager.rds.route_config_name = name_like(name, service, ROUTE_TYPE_URL)
    router = manager.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.CopyFrom(_pack(router_pb2.Router()))
    lis = listener_pb2.Listener(name=name)
    lis.api_listener.api_listener.CopyFrom(_pack(manager))
    return bytes(lis.SerializeToString(deterministic=True))


def route_configuration(name: str, service: str, endpoints: EndpointSet) -> bytes:
    """Routes for `service`: one per endpoint class with a request match, then the catch-all."""
    rc = route_pb2.RouteConfiguration(name=name)
    vhost = rc.virtual_hosts.add(name=service, domains=["*"])
    for ep, match in sorted((endpoints.matches.get(service) or {}).items()):
        r = vhost.routes.add(name=f"{service}.{ep}")
        r.match.prefix = match.path_prefix or "/"
        if match.method:
            header = r.match.headers.add(name=":method")
            header.string_match.exact = match.method
        r.route.cluster = name_like(name, f"{service}.{ep}", CLUSTER_TYPE_URL)
    default = vhost.routes.add(name=service)
    default.match.prefix = "/"
    default.route.cluster = name_like(name, service, CLUSTER_TYPE_URL)
    return bytes(rc.SerializeToString(deterministic=True))


def cluster(name: str) -> bytes:
    """An EDS cluster over ADS whose endpoints are the CLA of the same name."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.eds_config.CopyFrom(_ads())
    c.eds_cluster_config.service_name = name_like(name, local_name(name), CLA_TYPE_URL)
    c.connect_timeout.CopyFrom(duration_pb2.Duration(seconds=1))
    c.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
    c.common_lb_config.locality_weighted_lb_config.SetInParent()
    return bytes(c.SerializeToString(deterministic=True))


def name_like(asked: str, plain: str, type_url: str) -> str:
    """The name to refer to `plain` of `type_url` from a resource the client asked for as `asked`:
    plain if it asked plainly, the same authority's xdstp name if it used xDS federation."""
    if not asked.startswith("xdstp://"):
        return plain
    authority = asked[len("xdstp://") :].split("/", 1)[0]
    return f"xdstp://{authority}/{type_url.rsplit('/', 1)[-1]}/{plain}"
