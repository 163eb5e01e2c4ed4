"""The seams other packages build on: the weights module (no protobuf), stream callbacks, metric
labels from server-side names only, the debounce and the read-only follower cache."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import grpc
import prometheus_client
from test_xds_server import ADS_SOTW, Stream, new_cache, run, serving
from xds_testlib import WEST, endpoints, node, routing, sotw

from slate.xds.callbacks import OTHER_VIEW, Callbacks
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
            server.cache.set_routing(routing(("frontend", "us-west", "cart", {"us-east": 1})))
            await call.read()
            await call.write(sotw(["cart"], nonce="2", error="no thanks"))
            call.cancel()
            while server.streams:
                await asyncio.sleep(0.01)
            # A stream refused for its type: error, but never opened, so never closed either.
            bad = Stream(channel, ADS_SOTW)
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
                bad = Stream(channel, ADS_SOTW)
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
