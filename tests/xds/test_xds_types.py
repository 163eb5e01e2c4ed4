"""One ADS stream, every type: Listeners, RouteConfigurations and Clusters beside the CLAs, an
empty answer for types slate does not serve, and xdstp:// names."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from test_xds_server import ADS_SOTW, Stream, run, serving
from xds_testlib import delta, endpoints, node, routing, sotw

from slate.xds.cache import XdsCache
from slate.xds.config import CLUSTER_TYPE_URL, LISTENER_TYPE_URL, ROUTE_TYPE_URL
from slate.xds.endpoints import EndpointSet, RequestMatch
from slate.xds.protocol import ADS, AdsStream, DeltaStream, SotwStream
from slate.xds.resources import CLA_TYPE_URL
from slate.xds.typed import UnservedCache, derived_caches
from slate.xds.views import plain_envoy_view

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def cache() -> XdsCache:
    eps = endpoints({"cart": {"us-west": 1, "us-east": 1}, "ads": {"us-west": 1}})
    eps = EndpointSet(
        eps.services, matches={"cart": {"list": RequestMatch("/demo.Cart/List", "POST")}}
    )
    return XdsCache(routing(("frontend", "us-west", "cart", {"us-east": 1})), eps)


def ads(c: XdsCache, mode: str = "sotw") -> AdsStream:
    return AdsStream(
        SotwStream if mode == "sotw" else DeltaStream,
        {CLA_TYPE_URL: c, **derived_caches(c)},
        lambda t: UnservedCache(t, c),
        plain_envoy_view,
        wake=lambda: None,
    )


def drain(s: AdsStream) -> list[Any]:
    out = []
    while s.has_pending:
        got = s.next_response()
        if got is not None:
            out.append(discovery_pb2.DiscoveryResponse.FromString(got.payload))
    return out


def test_proxyless_chain_listener_route_cluster_cla_on_one_stream() -> None:
    s = ads(cache())
    s.on_request(sotw(["cart"], with_node=node(), type_url=LISTENER_TYPE_URL))
    (resp,) = drain(s)
    lis = listener_pb2.Listener.FromString(resp.resources[0].value)
    manager = hcm_pb2.HttpConnectionManager()
    lis.api_listener.api_listener.Unpack(manager)
    assert manager.rds.route_config_name == "cart" and manager.rds.config_source.HasField("ads")
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    s.on_request(sotw(["cart"], type_url=ROUTE_TYPE_URL))
    (resp,) = drain(s)
    rc = route_pb2.RouteConfiguration.FromString(resp.resources[0].value)
    routes = [(r.match.prefix, r.route.cluster) for r in rc.virtual_hosts[0].routes]
    assert routes == [("/demo.Cart/List", "cart.list"), ("/", "cart")]
    assert rc.virtual_hosts[0].routes[0].match.headers[0].string_match.exact == "POST"
    s.on_request(sotw(["cart", "cart.list"], type_url=CLUSTER_TYPE_URL))
    (resp,) = drain(s)
    clusters = [cluster_pb2.Cluster.FromString(a.value) for a in resp.resources]
    assert [c.eds_cluster_config.service_name for c in clusters] == ["cart", "cart.list"]
    assert all(c.common_lb_config.HasField("locality_weighted_lb_config") for c in clusters)
    s.on_request(sotw(["cart", "cart.list"], type_url=CLA_TYPE_URL))
    (resp,) = drain(s)
    assert len(resp.resources) == 2
    nonces = [str(i) for i in range(1, 5)]
    assert [t.responses for t in s.types.values()] == [1, 1, 1, 1] and s.responses == len(nonces)


def test_wildcards_unserved_types_and_full_state_removal() -> None:
    c = cache()
    s = ads(c)
    s.on_request(sotw([], with_node=node(), type_url=LISTENER_TYPE_URL))  # Envoy's LDS wildcard
    s.on_request(sotw([], type_url=CLUSTER_TYPE_URL))
    s.on_request(sotw(["whatever"], type_url=SECRET))
    got = {r.type_url: r for r in drain(s)}
    assert len(got[LISTENER_TYPE_URL].resources) == 0  # an answer, with no listeners in it
    assert len(got[SECRET].resources) == 0
    names = [cluster_pb2.Cluster.FromString(a.value).name for a in got[CLUSTER_TYPE_URL].resources]
    assert names == ["ads", "cart"]
    # ACKs do not make the empty answers come again.
    for t, r in got.items():
        s.on_request(sotw([] if t != SECRET else ["whatever"], nonce=r.nonce, type_url=t))
    assert drain(s) == []
    # A service goes: the full-state Cluster response no longer has it.
    c.set_endpoints(endpoints({"cart": {"us-west": 1}}))
    (resp,) = drain(s)
    assert resp.type_url == CLUSTER_TYPE_URL
    assert [cluster_pb2.Cluster.FromString(a.value).name for a in resp.resources] == ["cart"]


def test_delta_unserved_names_are_removed() -> None:
    s = ads(cache(), "delta")
    s.on_request(delta(["a", "b"], with_node=node(), type_url=SECRET))
    out = s.next_response()
    assert out is not None
    resp = discovery_pb2.DeltaDiscoveryResponse.FromString(out.payload)
    assert sorted(resp.removed_resources) == ["a", "b"] and resp.type_url == SECRET


def test_xdstp_names_resolve_and_keep_the_name_asked_for() -> None:
    s = ads(cache())
    auth = "xdstp://slate.test"
    cluster_name = f"{auth}/envoy.config.cluster.v3.Cluster/cart"
    s.on_request(sotw([cluster_name], with_node=node(), type_url=CLUSTER_TYPE_URL))
    (resp,) = drain(s)
    cl = cluster_pb2.Cluster.FromString(resp.resources[0].value)
    assert cl.name == cluster_name
    cla_name = f"{auth}/envoy.config.endpoint.v3.ClusterLoadAssignment/cart"
    assert cl.eds_cluster_config.service_name == cla_name
    s.on_request(sotw([cla_name], type_url=CLA_TYPE_URL))
    (resp,) = drain(s)
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(resp.resources[0].value)
    assert cla.cluster_name == cla_name
    assert [loc.locality.region for loc in cla.endpoints if loc.priority == 0] == ["us-east"]


def test_an_unserved_type_does_not_end_the_ads_stream() -> None:
    async def scenario() -> None:
        async with serving(cache()) as (_server, channel):
            call = Stream(channel, ADS_SOTW)
            await call.write(sotw(["x"], with_node=node(), type_url=SECRET))
            first = discovery_pb2.DiscoveryResponse.FromString(await call.read())
            assert first.type_url == SECRET and not first.resources
            await call.write(sotw(["cart"], type_url=CLA_TYPE_URL))
            second = discovery_pb2.DiscoveryResponse.FromString(await call.read())
            assert second.type_url == CLA_TYPE_URL and len(second.resources) == 1
            call.cancel()

    run(scenario())


def test_ads_stream_state_is_a_stream_state_per_type() -> None:
    s = ads(cache())
    s.on_request(sotw(["cart"], with_node=node(), type_url=CLA_TYPE_URL))
    s.on_request(sotw(["cart"], type_url=CLUSTER_TYPE_URL))
    assert set(s.types) == {CLA_TYPE_URL, CLUSTER_TYPE_URL}
    assert all(t.view == s.view and t.api == ADS for t in s.types.values())
