"""Bounded cost: caps on names and request size, nothing kept per unknown name, big subscriptions
handled in slices, a derandomized fuzz of requests, and memory back near its baseline after
hostile requests."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_xds_server import ADS_DELTA, ADS_SOTW, Stream, new_cache, run, serving
from xds_testlib import delta, node, parse_delta, parse_sotw, sotw

from slate.xds.cache import XdsCache
from slate.xds.protocol import ADS, DeltaStream, Limits, ProtocolError, SotwStream
from slate.xds.views import plain_envoy_view


def unknown(n: int, tag: str = "") -> list[str]:
    return [f"nosuch{tag}{i}.ep" for i in range(n)]


def test_names_per_request_are_capped_with_a_clear_error() -> None:
    limits = Limits(max_names=10)
    s = SotwStream(new_cache(), plain_envoy_view, api=ADS, limits=limits)
    with pytest.raises(ProtocolError) as err:
        s.on_request(sotw(unknown(11), with_node=node()))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "11 resource names; the limit is 10 (--max-names)" in err.value.message
    # Delta: the subscriptions of a stream add up to the same cap.
    d = DeltaStream(new_cache(), plain_envoy_view, api=ADS, limits=limits)
    d.on_request(delta(unknown(6, "a"), with_node=node()))
    with pytest.raises(ProtocolError, match="would subscribe to 12"):
        d.on_request(delta(unknown(6, "b")))


def test_unknown_names_allocate_nothing_per_name() -> None:
    c = new_cache()
    s = SotwStream(c, plain_envoy_view, api=ADS)
    s.on_request(sotw(["cart"], with_node=node()))
    assert s.next_response() is not None
    held = (len(c._resources), len(c._watchers), len(c._bodies))
    s.on_request(sotw(["cart", *unknown(5000)], nonce="1"))
    assert s.next_response() is None  # SotW: nothing to say about names that never existed
    assert (len(c._resources), len(c._watchers), len(c._bodies)) == held
    d = DeltaStream(c, plain_envoy_view, api=ADS)
    d.on_request(delta(["cart", *unknown(5000)], with_node=node()))
    removed = 0
    while d.has_pending:
        out = d.next_response()
        if out is not None:
            removed += len(parse_delta(out.payload)[0].removed_resources)
    assert removed == 5000  # delta must say they do not exist, but keeps nothing for them
    assert len(c._resources) == held[0] and len(c._watchers) == held[1]
    s.close()
    d.close()
    assert not c._waiting


def test_a_big_subscription_is_answered_in_slices() -> None:
    c = new_cache()
    s = SotwStream(c, plain_envoy_view, api=ADS, limits=Limits(slice_names=100))
    names = [f"cart.e{i}" for i in range(450)]  # endpoint classes of a known service
    s.on_request(sotw(names, with_node=node()))
    sizes = []
    while s.has_pending:
        out = s.next_response()
        if out is not None:
            sizes.append(len(parse_sotw(out.payload)[1]))
    assert sizes == [100, 100, 100, 100, 50]


def test_oversized_request_is_refused_and_others_carry_on() -> None:
    async def scenario() -> None:
        async with serving(new_cache(), limits=Limits(max_request_bytes=4096)) as (_, channel):
            big = Stream(channel, ADS_SOTW)
            await big.write(sotw(unknown(1000), with_node=node()))
            assert await big.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ok = Stream(channel, ADS_SOTW)
            await ok.write(sotw(["cart"], with_node=node()))
            assert set(parse_sotw(await ok.read())[1]) == {"cart"}
            ok.cancel()

    run(scenario())


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 2:
            at = rng.randrange(len(b) + 1)
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif b:
            i, j = sorted(rng.randrange(len(b)) for _ in range(2))
            b[i:j] = b[i:j] * 2
    return bytes(b)


_WORDS = ["cart", "cart.list", "ads", "*", "", "xdstp://x/y", "a" * 300, "é\u2028", "nosuch.e"]


def _mutate_fields(rng: random.Random, mode: str, data: bytes) -> bytes:
    """A field-level mutation: requests that decode, with odd but well-formed contents."""
    if mode == "sotw":
        req: Any = discovery_pb2.DiscoveryRequest.FromString(data)
        names = req.resource_names
    else:
        req = discovery_pb2.DeltaDiscoveryRequest.FromString(data)
        names = rng.choice([req.resource_names_subscribe, req.resource_names_unsubscribe])
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        if op == 0:
            names.append(rng.choice(_WORDS))
        elif op == 1 and names:
            del names[rng.randrange(len(names))]
        elif op == 2:
            req.response_nonce = rng.choice(["", "0", "1", "2", "99", "-1", "x"])
        elif op == 3:
            req.ClearField("node") if rng.random() < 0.5 else req.node.locality.Clear()
        elif op == 4:
            req.type_url = rng.choice(["", "type.example/Other", req.type_url])
        elif op == 5:
            req.error_detail.message = rng.choice(["", "bad", "\x00" * 10])
        elif mode == "delta":
            req.initial_resource_versions[rng.choice(_WORDS)] = rng.choice(["", "v", "*"])
    return bytes(req.SerializeToString())


def _seeds() -> list[tuple[str, bytes]]:
    from slate.xds.resources import CLA_TYPE_URL

    n = node()
    reqs: list[tuple[str, Any]] = [
        ("sotw", sotw(["cart", "cart.list"], with_node=n)),
        ("sotw", sotw(["*", "ads"], nonce="1", error="bad", with_node=n)),
        ("sotw", sotw([], with_node=n, type_url="type.example/Other")),
        ("delta", delta(["cart"], ["*"], with_node=n, initial={"cart": "v"})),
        ("delta", delta([], ["cart"], nonce="2", error="bad", with_node=n, type_url=CLA_TYPE_URL)),
    ]
    return [(mode, r.SerializeToString()) for mode, r in reqs]


def test_fuzzed_requests_never_break_the_protocol_state() -> None:
    """3,000 mutated requests (seeded), each fed to a fresh stream and then to a long-lived one:
    a request either decodes and is handled, or ends its stream with a ProtocolError; nothing
    else escapes, and the long-lived streams keep answering."""
    rng = random.Random(20261204)
    c = new_cache()
    seeds = _seeds()
    long_lived: dict[str, Any] = {
        "sotw": SotwStream(c, plain_envoy_view, api=ADS),
        "delta": DeltaStream(c, plain_envoy_view, api=ADS),
    }
    long_lived["sotw"].on_request(sotw(["cart"], with_node=node()))
    long_lived["delta"].on_request(delta(["cart"], with_node=node()))
    decoded = refused = 0
    for i in range(3000):
        mode, seed = seeds[i % len(seeds)]
        data = _mutate(rng, seed) if i % 3 == 0 else _mutate_fields(rng, mode, seed)
        kind: Any = (
            discovery_pb2.DiscoveryRequest
            if mode == "sotw"
            else (discovery_pb2.DeltaDiscoveryRequest)
        )
        try:
            req = kind.FromString(data)
        except DecodeError:
            continue
        decoded += 1
        fresh: Any = (SotwStream if mode == "sotw" else DeltaStream)(c, plain_envoy_view, api=ADS)
        stream: Any
        for stream in (
            fresh,
            long_lived[mode],
        ):
            try:
                stream.on_request(req)
                while stream.has_pending:
                    stream.next_response()
            except ProtocolError:
                refused += 1
        if i % 500 == 0:
            c.set_routing(c.routing)
    assert decoded > 1500 and refused > 100, (decoded, refused)
    # The cache still answers a clean stream.
    fresh = SotwStream(c, plain_envoy_view, api=ADS)
    fresh.on_request(sotw(["cart"], with_node=node()))
    out = fresh.next_response()
    assert out is not None and "cart" in parse_sotw(out.payload)[1]


def test_fuzzed_requests_over_grpc_leave_the_server_serving() -> None:
    """300 mutated requests on real streams: no INTERNAL errors, health stays SERVING."""
    rng = random.Random(7)
    seeds = _seeds()

    async def scenario() -> None:
        async with serving(new_cache()) as (server, channel):
            raw = lambda b: b  # noqa: E731 (send the mutated bytes as they are)
            codes: dict[str, int] = {}
            for batch in range(10):
                calls = []
                for i in range(batch * 30, batch * 30 + 30):
                    mode, seed = seeds[i % len(seeds)]
                    call = Stream(channel, ADS_SOTW if mode == "sotw" else ADS_DELTA, raw)
                    data = _mutate(rng, seed) if i % 2 else _mutate_fields(rng, mode, seed)
                    await call.write(data)
                    calls.append(call)
                await asyncio.sleep(0.1)
                for call in calls:
                    call.cancel()
                for call in calls:
                    code = await call.status()
                    codes[code.name] = codes.get(code.name, 0) + 1
            assert "INTERNAL" not in codes and "UNKNOWN" not in codes, codes
            stub = health_pb2_grpc.HealthStub(channel)
            got = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert got.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(0.1)
            assert not server.streams

    run(scenario(), timeout=120)


def test_memory_returns_near_baseline_after_hostile_requests() -> None:
    """Python heap (tracemalloc) after streams naming 10,000 unknown names each have come and
    gone: back within 1 MB of the baseline, whatever they made the server do meanwhile."""

    async def scenario() -> None:
        cache: XdsCache = new_cache()
        async with serving(cache) as (server, channel):
            warm = Stream(channel, ADS_SOTW)
            await warm.write(sotw(["cart"], with_node=node()))
            await warm.read()
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                for round_ in range(3):
                    calls = []
                    for j, method in enumerate((ADS_SOTW, ADS_DELTA, ADS_SOTW)):
                        call = Stream(channel, method)
                        names = unknown(10_000, f"{round_}x{j}")
                        if method == ADS_SOTW:
                            await call.write(sotw(names, with_node=node()))
                        else:
                            await call.write(delta(names, with_node=node()))
                        calls.append(call)
                    await asyncio.sleep(0.3)
                    peak = tracemalloc.get_traced_memory()[0]
                    for call in calls:
                        call.cancel()
                    while len(server.streams) > 1:
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            assert peak - base > 1_000_000, "the hostile streams should have cost something"
            assert after - base < 1_000_000, (base, peak, after)
            warm.cancel()

    run(scenario(), timeout=120)
