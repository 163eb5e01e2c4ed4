"""The seams other packages build on: the weights module (no protobuf), stream callbacks, metric
labels from server-side names only, the debounce and the read-only follower cache."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import grpc
import prometheus_client
import pytest
from test_xds_server import ADS_SOTW, EDS_SOTW, Stream, new_cache, run, serving, settled
from xds_testlib import WEST, cla_weights, endpoints, node, parse_sotw, routing, sotw

from slate.model.errors import InputError
from slate.model.routing import Routing, routing_from_routes
from slate.xds.cache import UpdateResult, XdsCache
from slate.xds.callbacks import OTHER_VIEW, Callbacks
from slate.xds.debounce import Debouncer
from slate.xds.endpoints import Endpoint, EndpointSet
from slate.xds.follower import FollowerCache, routes_from_status
from slate.xds.protocol import NackRecord, Outgoing, ProtocolError, StreamState
from slate.xds.weights import integer_weights, view_plan


def test_weights_module_imports_no_protobuf_or_grpc() -> None:
    code = (
        "import sys, slate.xds.weights; "
        "bad = [m for m in sys.modules if m.startswith(('google.protobuf', 'grpc', 'envoy'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_weights_for_a_destination_rule_and_for_envoy() -> None:
    r = routing(("frontend", "us-west", "cart", {"us-west": 2, "us-east": 1}))
    eps = endpoints({"cart": {"us-west": 1, "us-east": 1, "eu": 1}})
    assert view_plan(r, eps, WEST, "cart") == (
        ("us-east", 0, 3333),
        ("us-west", 0, 6667),
        ("eu", 1, 1),
    )
    assert integer_weights({"us-west": 2, "us-east": 1}, 100) == {"us-west": 67, "us-east": 33}
    assert view_plan(r, eps, WEST, "nosuch") is None


class Recorder(Callbacks):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_stream_open(self, stream: StreamState) -> None:
        self.events.append(("open", str(stream.view)))

    def on_stream_request(self, stream: StreamState, request: Any) -> None:
        self.events.append(("request", list(request.resource_names)))

    def on_stream_response(self, stream: StreamState, out: Outgoing) -> None:
        self.events.append(("response", sorted(out.versions)))

    def on_ack(self, stream: StreamState, nonce: str) -> None:
        self.events.append(("ack", nonce))

    def on_nack(self, stream: StreamState, record: NackRecord) -> None:
        self.events.append(("nack", record.message))

    def on_stream_error(self, stream: StreamState, error: ProtocolError) -> None:
        self.events.append(("error", error.code.name))

    def on_stream_closed(self, stream: StreamState) -> None:
        self.events.append(("closed", str(stream.view)))


class Broken(Callbacks):
    def on_stream_open(self, stream: StreamState) -> None:
        raise RuntimeError("a buggy embedding")


def test_callbacks_see_every_step_and_a_failing_one_harms_nothing() -> None:
    rec = Recorder()

    async def scenario() -> None:
        async with serving(new_cache(), callbacks=[Broken(), rec]) as (server, channel):
            call = Stream(channel, ADS_SOTW)
            await call.write(sotw(["cart"], with_node=node()))
            await call.read()
            await call.write(sotw(["cart"], nonce="1"))
            await settled(server)  # else the ACK may arrive after the next push: stale, ignored
            assert isinstance(server.cache, XdsCache)
            server.cache.set_routing(routing(("frontend", "us-west", "cart", {"us-east": 1})))
            await call.read()
            await call.write(sotw(["cart"], nonce="2", error="no thanks"))
            call.cancel()
            while server.streams:
                await asyncio.sleep(0.01)
            # A stream refused for its type (plain EDS serves only CLAs): error, but never
            # opened, so never closed either.
            bad = Stream(channel, EDS_SOTW)
            await bad.write(sotw([], with_node=node(), type_url="type.example/Nope"))
            assert await bad.status() == grpc.StatusCode.UNIMPLEMENTED

    run(scenario())
    assert rec.events == [
        ("open", "frontend@us-west"),
        ("request", ["cart"]),
        ("response", ["cart"]),
        ("ack", "1"),
        ("request", ["cart"]),
        ("response", ["cart"]),
        ("nack", "no thanks"),
        ("request", ["cart"]),
        ("closed", "frontend@us-west"),
        ("error", "UNIMPLEMENTED"),
    ]


def test_metric_labels_come_from_known_views_and_go_with_their_last_stream() -> None:
    async def scenario() -> None:
        async with serving(new_cache()) as (server, channel):
            get = server.metrics.registry.get_sample_value
            junk = "x" * 5000
            calls = []
            for i in range(5):
                call = Stream(channel, ADS_SOTW)
                await call.write(sotw(["cart"], with_node=node(service=f"{junk}{i}")))
                await call.read()
                calls.append(call)
            known = Stream(channel, ADS_SOTW)
            await known.write(sotw(["cart"], with_node=node()))
            await known.read()
            streams = {"api": "ads", "mode": "sotw"}
            assert get("slate_xds_streams", {**streams, "view": OTHER_VIEW}) == 5
            assert get("slate_xds_streams", {**streams, "view": "frontend@us-west"}) == 1
            text = prometheus_client.generate_latest(server.metrics.registry)
            assert junk.encode() not in text
            # Refused streams (bad type after a good node) never push the gauge below zero.
            for _ in range(3):
                bad = Stream(channel, EDS_SOTW)
                await bad.write(sotw([], with_node=node(), type_url="type.example/Nope"))
                await bad.status()
            for call in [*calls, known]:
                call.cancel()
            for _ in range(200):
                if not server.streams:
                    break
                await asyncio.sleep(0.01)
            samples = [
                s
                for m in server.metrics.registry.collect()
                if m.name in ("slate_xds_streams", "slate_xds_acks", "slate_xds_nacks")
                for s in m.samples
            ]
            assert samples == [], samples

    run(scenario())


# ---- debounce ----------------------------------------------------------------------------------


class CountingCache(XdsCache):
    """An XdsCache that counts its updates (how many times every view was rebuilt)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates = 0

    def update(
        self, routing: Routing | None = None, endpoints: EndpointSet | None = None
    ) -> UpdateResult:
        self.updates += 1
        return super().update(routing=routing, endpoints=endpoints)


def churn_cache() -> CountingCache:
    return CountingCache(
        routing(("frontend", "us-west", "cart", {"us-west": 1})),
        endpoints({f"svc{i}": {"us-west": 1, "us-east": 1, "eu": 1} for i in range(5)}),
    )


def test_a_burst_of_endpoint_events_from_three_clusters_is_one_update() -> None:
    c = churn_cache()

    async def scenario() -> None:
        d = Debouncer(c, quiet_s=0.05, max_delay_s=1.0)
        task = asyncio.create_task(d.run())
        # 5 services x 3 clusters x 6 rounds of EndpointSlice changes, back to back.
        for round_ in range(6):
            for svc in range(5):
                for k, cluster in enumerate(("us-west", "us-east", "eu")):
                    eps = tuple(Endpoint(f"10.{k}.{svc}.{j}", 80) for j in range(round_ + 1))
                    d.set_cluster_endpoints(f"svc{svc}", cluster, eps)
            await asyncio.sleep(0.001)
        while d.pending:
            await asyncio.sleep(0.01)
        task.cancel()
        assert d.stats.events == 90 and d.stats.applied == 1

    run(scenario())
    assert c.updates == 1
    by_cluster = c.endpoints.clusters_of("svc3")
    assert by_cluster is not None and len(by_cluster["eu"]) == 6  # the last event of each won


def test_constant_churn_still_reaches_proxies_every_max_delay() -> None:
    c = churn_cache()

    async def scenario() -> None:
        d = Debouncer(c, quiet_s=0.05, max_delay_s=0.2)
        task = asyncio.create_task(d.run())
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        n = 0
        while loop.time() < end:  # an event every 10 ms: never quiet for 50 ms
            n += 1
            d.set_cluster_endpoints("svc0", "eu", (Endpoint("10.9.9.9", n),))
            await asyncio.sleep(0.01)
        d.flush()
        task.cancel()
        # Not one rebuild per event, and not zero until the churn stops.
        assert 2 <= d.stats.applied <= 8, d.stats
        assert d.stats.events == n > 40

    run(scenario())


def test_debounced_routing_and_a_failing_update_do_not_stop_it() -> None:
    c = churn_cache()

    async def scenario() -> None:
        d = Debouncer(c, quiet_s=0.01, max_delay_s=0.05)
        task = asyncio.create_task(d.run())
        d.set_routing(routing(("frontend", "us-west", "cart", {"us-east": 1})))
        d.set_routing(routing(("frontend", "us-west", "cart", {"eu": 1})))
        await asyncio.sleep(0.1)
        assert c.routing.get("frontend", "us-west", "cart") is not None
        real = c.update
        c.update = lambda **_: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
        d.set_routing(routing())
        await asyncio.sleep(0.1)
        c.update = real  # type: ignore[method-assign]
        d.set_endpoints(endpoints({"cart": {"eu": 1}}))
        await asyncio.sleep(0.1)
        task.cancel()
        assert (d.stats.applied, d.stats.failed) == (2, 1)
        assert set(c.endpoints.services) == {"cart"}

    run(scenario())
    route = c.routing.get("frontend", "us-west", "cart")
    assert route is not None and dict(route.weights) == {"eu": 1.0}


# ---- follower cache ----------------------------------------------------------------------------

ROUTE: dict[str, Any] = {
    "fromService": "frontend",
    "fromCluster": "us-west",
    "to": "cart",
    "weights": [
        {"cluster": "us-west", "weight": 0.7},
        {"cluster": "us-east", "weight": 0.3},
    ],
}
STATUS = {"routes": [ROUTE]}


def test_follower_serves_what_the_leader_wrote_into_status() -> None:
    eps = endpoints({"cart": {"us-west": 1, "us-east": 1}})
    leader = XdsCache(routing_from_routes(routes_from_status(STATUS)), eps)
    follower = FollowerCache(eps)
    assert follower.follow_status("shop", "tp", STATUS) is not None
    assert follower.follow_status("shop", "tp", STATUS) is None  # unchanged: no rebuild
    a, b = leader.resource(WEST, "cart"), follower.resource(WEST, "cart")
    assert a is not None and b is not None and a.version == b.version  # byte-identical CLAs
    assert not hasattr(follower, "set_routing")
    with pytest.raises(TypeError):
        follower.update(routing=leader.routing)
    bad = {"routes": [{**ROUTE, "weights": [{"cluster": "us-west", "weight": -1}]}]}
    with pytest.raises(InputError, match=r"status\.routes\[0\]\.weights\[0\]\.weight"):
        follower.follow_status("shop", "tp", bad)
    assert follower.resource(WEST, "cart") is b  # the previous routes stay
    follower.forget("shop", "tp")
    nearest = follower.resource(WEST, "cart")
    assert nearest is not None and nearest.plan[0] == ("us-west", 0, 10_000)


def test_server_serves_a_follower_cache() -> None:
    eps = endpoints({"cart": {"us-west": 1, "us-east": 1}})
    follower = FollowerCache(eps)
    follower.follow_status("shop", "tp", STATUS)

    async def scenario() -> None:
        async with serving(follower) as (_server, channel):  # type: ignore[arg-type]
            call = Stream(channel, ADS_SOTW)
            await call.write(sotw(["cart"], with_node=node()))
            _, clas = parse_sotw(await call.read())
            assert cla_weights(clas["cart"]) == {"us-west": (0, 7000), "us-east": (0, 3000)}
            moved = {
                "routes": [
                    {**STATUS["routes"][0], "weights": [{"cluster": "us-east", "weight": 1}]}
                ]
            }
            follower.follow_status("shop", "tp", moved)
            _, clas = parse_sotw(await call.read())
            assert cla_weights(clas["cart"]) == {"us-east": (0, 10_000), "us-west": (1, 1)}
            call.cancel()

    run(scenario())
