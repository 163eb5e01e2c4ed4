"""The gRPC server with gRPC clients (no Envoy): sharing, pushes, errors, health, metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from xds_testlib import (
    cla_weights,
    delta,
    endpoints,
    node,
    parse_delta,
    parse_sotw,
    sotw,
    split_routing,
)

from slate.xds.cache import XdsCache
from slate.xds.server import ADS_SERVICE, EDS_SERVICE, XdsServer

ADS_SOTW = f"/{ADS_SERVICE}/StreamAggregatedResources"
ADS_DELTA = f"/{ADS_SERVICE}/DeltaAggregatedResources"
EDS_SOTW = f"/{EDS_SERVICE}/StreamEndpoints"
EDS_DELTA = f"/{EDS_SERVICE}/DeltaEndpoints"

EPS = endpoints({"cart": {"us-west": 2, "us-east": 1}})
QUIET = 0.3  # how long "no response" is waited for


def run(coro: Coroutine[Any, Any, None], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


async def settled(server: XdsServer, timeout: float = 5) -> None:
    """Until every stream has had its responses ACKed or NACKed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while any(s.outstanding for s in server.streams):
        assert asyncio.get_running_loop().time() < deadline, "responses left unanswered"
        await asyncio.sleep(0.005)


def new_cache() -> XdsCache:
    return XdsCache(split_routing({"us-west": 0.8, "us-east": 0.2}, {"us-east": 1.0}), EPS)


@asynccontextmanager
async def serving(
    cache: XdsCache, **kwargs: Any
) -> AsyncIterator[tuple[XdsServer, grpc.aio.Channel]]:
    server = XdsServer(cache, **kwargs)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.stop(grace=0)


class Stream:
    """A raw client stream: requests are messages, responses are the bytes on the wire.

    A reader task queues responses, so waiting for "nothing more" does not cancel the RPC.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        method: str = ADS_SOTW,
        serializer: Any = lambda m: m.SerializeToString(),
    ) -> None:
        self.call = channel.stream_stream(
            method, request_serializer=serializer, response_deserializer=None
        )()
        self.responses: asyncio.Queue[bytes] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for data in self.call:
                self.responses.put_nowait(data)

    async def write(self, req: Any) -> None:
        await self.call.write(req)

    async def read(self, timeout: float = 5) -> bytes:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def assert_quiet(self) -> None:
        await asyncio.sleep(QUIET)
        assert self.responses.empty(), "unexpected response"

    async def status(self) -> grpc.StatusCode:
        code = await asyncio.wait_for(self.call.code(), 5)
        assert isinstance(code, grpc.StatusCode)
        return code

    def cancel(self) -> None:
        self.call.cancel()


def test_streams_of_one_view_get_the_same_bytes() -> None:
    async def scenario() -> None:
        cache = new_cache()
        async with serving(cache) as (server, channel):
            a, b, east = Stream(channel), Stream(channel), Stream(channel)
            await a.write(sotw(["cart"], with_node=node(node_id="a")))
            await b.write(sotw(["cart"], with_node=node(node_id="b")))
            await east.write(sotw(["cart"], with_node=node(region="us-east", node_id="c")))
            ra, rb, re = await a.read(), await b.read(), await east.read()
            assert ra == rb  # same view, same bytes (first nonce is "1" on both)
            assert ra != re
            assert cla_weights(parse_sotw(ra)[1]["cart"])["us-west"] == (0, 8000)
            assert cla_weights(parse_sotw(re)[1]["cart"]) == {
                "us-east": (0, 10_000),
                "us-west": (1, 1),
            }
            resources = {id(cache.resource(s.view, "cart")) for s in server.streams if s.view}
            assert len(resources) == 2  # one Resource object per view, three streams

            # Only the west view changes: its two streams hear, the east one does not.
            cache.set_routing(split_routing({"us-west": 0.5, "us-east": 0.5}, {"us-east": 1.0}))
            pa, pb = await a.read(), await b.read()
            assert pa == pb
            assert cla_weights(parse_sotw(pa)[1]["cart"])["us-west"] == (0, 5000)
            await east.assert_quiet()
            for call in (a, b, east):
                call.cancel()

    run(scenario())


def test_bad_streams_are_closed_alone() -> None:
    async def scenario() -> None:
        cache = new_cache()
        async with serving(cache) as (server, channel):
            good = Stream(channel)
            await good.write(sotw(["cart"], with_node=node()))
            await good.read()

            no_node = Stream(channel)
            await no_node.write(sotw(["cart"]))
            assert await no_node.status() == grpc.StatusCode.INVALID_ARGUMENT

            # Plain EDS serves only CLAs (ADS answers every type: test_xds_types.py).
            lds = Stream(channel, EDS_SOTW)
            await lds.write(
                sotw(
                    [],
                    with_node=node(),
                    type_url="type.googleapis.com/envoy.config.listener.v3.Listener",
                )
            )
            assert await lds.status() == grpc.StatusCode.UNIMPLEMENTED

            garbage = Stream(channel, ADS_SOTW, serializer=None)
            await garbage.write(b"\xff\xff\xff not a protobuf")
            assert await garbage.status() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed request" in await garbage.call.details()

            # The server and the good stream carry on.
            cache.set_routing(split_routing({"us-east": 1.0}, {"us-east": 1.0}))
            pushed = parse_sotw(await good.read())[1]["cart"]
            assert cla_weights(pushed)["us-east"] == (0, 10_000)
            errors = server.metrics.registry.get_sample_value
            assert errors("slate_xds_stream_errors_total", {"code": "INVALID_ARGUMENT"}) == 2
            assert errors("slate_xds_stream_errors_total", {"code": "UNIMPLEMENTED"}) == 1
            good.cancel()

    run(scenario())


@pytest.mark.parametrize("method", [ADS_SOTW, EDS_SOTW])
def test_sotw_nack_is_counted_reported_and_not_resent(method: str) -> None:
    async def scenario() -> None:
        cache = new_cache()
        async with serving(cache) as (server, channel):
            call = Stream(channel, method)
            await call.write(sotw(["cart"], with_node=node()))
            first, _ = parse_sotw(await call.read())
            await call.write(sotw(["cart"], nonce=first.nonce, version=first.version_info))
            # Let the ACK land first: once the next response is out, it would be stale (ignored).
            await settled(server)
            cache.set_routing(split_routing({"us-west": 0.1, "us-east": 0.9}, {"us-east": 1.0}))
            pushed, _ = parse_sotw(await call.read())
            await call.write(
                sotw(
                    ["cart"],
                    nonce=pushed.nonce,
                    version=first.version_info,
                    error="rejected by test",
                )
            )
            await call.assert_quiet()  # no re-send of the rejected version
            cache.set_routing(cache.routing)
            await call.assert_quiet()
            get = server.metrics.registry.get_sample_value
            labels = {"mode": "sotw", "view": "frontend@us-west"}
            assert get("slate_xds_nacks_total", labels) == 1
            assert get("slate_xds_acks_total", labels) == 1
            assert [n.message for n in server.recent_nacks] == ["rejected by test"]
            # New content is sent again.
            cache.set_routing(split_routing({"us-west": 0.2, "us-east": 0.8}, {"us-east": 1.0}))
            _, clas = parse_sotw(await call.read())
            assert cla_weights(clas["cart"])["us-west"] == (0, 2000)
            call.cancel()

    run(scenario())


@pytest.mark.parametrize("method", [ADS_DELTA, EDS_DELTA])
def test_delta_push_and_nack(method: str) -> None:
    async def scenario() -> None:
        cache = new_cache()
        async with serving(cache) as (server, channel):
            call = Stream(channel, method)
            await call.write(delta(["cart"], with_node=node()))
            resp, res = parse_delta(await call.read())
            await call.write(delta(nonce=resp.nonce))
            cache.set_routing(split_routing({"us-west": 0.3, "us-east": 0.7}, {"us-east": 1.0}))
            resp, res = parse_delta(await call.read())
            assert cla_weights(res["cart"][1])["us-west"] == (0, 3000)
            await call.write(delta(nonce=resp.nonce, error="nope"))
            await call.assert_quiet()
            assert (
                server.metrics.registry.get_sample_value(
                    "slate_xds_nacks_total", {"mode": "delta", "view": "frontend@us-west"}
                )
                == 1
            )
            call.cancel()

    run(scenario())


def test_health_and_stream_metrics() -> None:
    async def scenario() -> None:
        async with serving(new_cache()) as (server, channel):
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", ADS_SERVICE, EDS_SERVICE):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            get = server.metrics.registry.get_sample_value
            labels = {"api": "ads", "mode": "delta", "view": "frontend@us-east"}
            call = Stream(channel, ADS_DELTA)
            await call.write(delta(["cart"], with_node=node(region="us-east")))
            await call.read()
            assert get("slate_xds_streams", labels) == 1
            assert get("slate_xds_pushes_total", {"mode": "delta"}) == 1
            call.cancel()
            for _ in range(100):  # the server notices the cancel shortly
                if get("slate_xds_streams", labels) is None:
                    break
                await asyncio.sleep(0.02)
            # The view's last stream ended: its series are gone, not left at 0.
            assert get("slate_xds_streams", labels) is None
            assert not server.streams

    run(scenario())


def test_push_latency_is_observed_for_updates() -> None:
    async def scenario() -> None:
        cache = new_cache()
        async with serving(cache) as (server, channel):
            call = Stream(channel)
            await call.write(sotw(["cart"], with_node=node()))
            await call.read()
            get = server.metrics.registry.get_sample_value
            assert get("slate_xds_push_latency_seconds_count", {"mode": "sotw"}) == 0
            cache.set_routing(split_routing({"us-east": 1.0}, {"us-east": 1.0}))
            await call.read()
            assert get("slate_xds_push_latency_seconds_count", {"mode": "sotw"}) == 1
            latency = get("slate_xds_push_latency_seconds_sum", {"mode": "sotw"})
            assert latency is not None and latency < 1.0
            call.cancel()

    run(scenario())
