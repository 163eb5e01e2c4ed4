"""xDS fan-out: how long until a new weight set reaches every connected proxy stream.

    .venv/bin/python bench/xds_fanout.py [--sizes 100,1000,5000,10000] [--mode sotw|delta|both]
                                         [--no-floor] [--client lean|grpc]

The server runs in its own process (the real `XdsServer` + `XdsCache`, as `slate xds serve` runs
it); this process plays N proxies, each on its own connection, identified like plain Envoys
(node.cluster = source service, locality.region = source cluster). Views are spread like a real
mesh: 40 services + ingress in 3 clusters (123 views), sidecar counts per service falling off
Zipf-like, each proxy subscribing to the 2-5 destinations (services or endpoint classes) its
service calls. Each proxy receives every response in full and ACKs it (version + nonce), as Envoy
does; the server must process every ACK before an update counts as done.

The proxies share the machine's cores with the server. By default they are lean (`LeanProxy`: a
minimal HTTP/2 client on a plain asyncio protocol, as cheap per message as we can make Python),
so the figures are mostly the server's; `--client grpc` uses grpc.aio clients instead, which cost
about as much CPU as the server does. Their CPU is reported separately, as is any other process's
CPU on the machine meanwhile.

For each N: connect all streams (initial responses ACKed), then apply full routing updates (every
route re-weighted, so every stream gets a push) and measure, per update:
  * seconds from the update call in the server to the last stream's response arriving,
  * server CPU seconds from the update until every ACK is processed (all threads, and its event
    loop thread alone), the proxies' CPU and other processes' CPU in the same window,
and once per N the server RSS per connected stream. Then one update that changes a single view,
to show that only that view's streams are pushed. With the floor (default), the same is measured
against a bare grpc.aio server (same server options) that writes one pre-built response per
stream and reads the ACKs: the cost of the transport alone. Figures only: nothing passes or fails
on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLUSTERS = ("us-west", "us-east", "eu-west")
N_SERVICES = 40
TARGET_S = 2.0
ISTIOD_SIDECARS_PER_VCPU = 2000
CONNECT_BATCH = 250
PHASE_TIMEOUT_S = 60.0
UPDATES_PER_SIZE = 5
TICK = os.sysconf("SC_CLK_TCK")


# ---- the synthetic mesh (deterministic; both processes build the same one) ----------------------


@dataclass(frozen=True)
class Mesh:
    services: tuple[str, ...]
    calls: dict[str, tuple[str, ...]]  # source service -> destinations (route `to`s)
    endpoints: dict[str, dict[str, list[str]]]  # service -> cluster -> ["ip:port"]
    sidecar_share: dict[str, float]  # source service -> share of all proxies


def build_mesh(seed: int = 7) -> Mesh:
    rng = random.Random(seed)
    services = tuple(f"svc{i:02d}" for i in range(N_SERVICES))
    calls: dict[str, tuple[str, ...]] = {}
    for i, src in enumerate(("ingress", *services)):
        later = services[i:] if src != "ingress" else services[:3]
        if not later:
            continue
        k = min(len(later), rng.randint(2, 5)) if src != "ingress" else len(later)
        dests = rng.sample(later, k)
        calls[src] = tuple(d if rng.random() < 0.5 else f"{d}.ep{rng.randint(0, 2)}" for d in dests)
    endpoints = {
        svc: {
            c: [f"10.{ci}.{si}.{j + 1}:8080" for j in range(rng.randint(2, 12))]
            for ci, c in enumerate(CLUSTERS)
        }
        for si, svc in enumerate(services)
    }
    sources = [s for s in ("ingress", *services) if s in calls]
    raw = {s: 1.0 / (rank + 1) ** 0.9 for rank, s in enumerate(rng.sample(sources, len(sources)))}
    total = sum(raw.values())
    return Mesh(services, calls, endpoints, {s: w / total for s, w in raw.items()})


def mesh_routes(
    mesh: Mesh, seed: int, only: tuple[str, str] | None = None, base: int = 0
) -> dict[str, Any]:
    """Route-file JSON: random weights per (source, cluster, destination), drawn from `seed`.
    With `only`, just that view's routes use `seed`; every other view's come from `base`."""
    routes = []
    for src, dests in mesh.calls.items():
        for cluster in CLUSTERS:
            view_seed = seed if only is None or only == (src, cluster) else base
            rng = random.Random(f"{view_seed}/{src}/{cluster}")
            for to in dests:
                weights = {c: round(rng.random(), 4) + 0.01 for c in CLUSTERS}
                routes.append(
                    {"from_service": src, "from_cluster": cluster, "to": to, "weights": weights}
                )
    return {"routes": routes}


def assign_streams(mesh: Mesh, n: int) -> list[tuple[str, str]]:
    """n (source service, cluster) pairs, by sidecar share (largest remainder), spread over the
    clusters evenly."""
    exact = {s: share * n for s, share in mesh.sidecar_share.items()}
    counts = {s: int(x) for s, x in exact.items()}
    for s in sorted(exact, key=lambda s: exact[s] - counts[s], reverse=True)[
        : n - sum(counts.values())
    ]:
        counts[s] += 1
    out = []
    for s, k in sorted(counts.items()):
        out += [(s, CLUSTERS[i % len(CLUSTERS)]) for i in range(k)]
    return out


# ---- server process ---------------------------------------------------------------------------


def serve(port: int, floor: bool) -> None:
    """The server side: reads commands on stdin, answers one JSON line per command on stdout.

    With `floor`, a bare grpc.aio server instead of slate's: each stream answers its first
    request and every update with the same pre-built response bytes and reads the ACKs, nothing
    else. It is the cost of the transport alone, to compare slate's against.
    """
    import logging

    from slate.model.routing import routing_from_json
    from slate.runtime import tune_gc
    from slate.xds.cache import XdsCache
    from slate.xds.endpoints import endpoints_from_data
    from slate.xds.server import XdsServer

    logging.basicConfig(level=logging.ERROR)
    tune_gc()  # as `slate xds serve` does
    mesh = build_mesh()
    endpoints = endpoints_from_data(
        {"services": {s: {"clusters": by_c} for s, by_c in mesh.endpoints.items()}}
    )

    async def main() -> None:
        cache = XdsCache(routing_from_json(mesh_routes(mesh, 0)), endpoints)
        server: Any = XdsServer(cache) if not floor else FloorServer(cache)
        bound = await server.start(f"127.0.0.1:{port}")
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line.strip())
            loop.call_soon_threadsafe(commands.put_nowait, "quit")

        threading.Thread(target=read_stdin, daemon=True).start()
        say({"ready": bound, **usage()})
        while True:
            cmd, *args = (await commands.get()).split()
            if cmd == "quit":
                break
            if cmd == "update":  # update SEED [SERVICE CLUSTER BASE_SEED]
                only = (args[1], args[2]) if len(args) == 4 else None
                base = int(args[3]) if len(args) == 4 else 0
                routing = routing_from_json(mesh_routes(mesh, int(args[0]), only, base))
                started = time.monotonic()
                result = server.cache.set_routing(routing) if not floor else server.push()
                say(
                    {
                        "started": started,
                        "generation": result.generation,
                        "changed": result.changed,
                        "notified": result.notified,
                        "build_s": result.seconds,
                    }
                )
            elif cmd == "stats":
                pending = sum(1 for s in server.streams if s.outstanding)
                say({"streams": len(server.streams), "unacked": pending, **usage()})
        await server.stop(grace=0)

    asyncio.run(main())


class FloorServer:
    """Bare grpc.aio ADS: same transport, no xDS logic (see `serve`)."""

    def __init__(self, cache: Any) -> None:
        from envoy.service.discovery.v3 import discovery_pb2

        from slate.xds.resources import CLA_TYPE_URL
        from slate.xds.views import ViewKey

        self.cache = cache
        view = ViewKey("svc00", CLUSTERS[0])
        mesh = build_mesh()
        resp = discovery_pb2.DiscoveryResponse(version_info="1", type_url=CLA_TYPE_URL, nonce="1")
        for name in mesh.calls["svc00"]:
            r = cache.resource(view, name)
            resp.resources.add(type_url=CLA_TYPE_URL, value=r.cla)
        self.payload = resp.SerializeToString()
        self.streams: list[Any] = []
        self._server: Any = None

    async def start(self, address: str) -> int:
        import grpc

        async def handler(requests: Any, context: Any) -> None:
            state = FloorStream()
            self.streams.append(state)

            async def read() -> None:
                async for _ in requests:
                    state.outstanding = 0
                    if state.first:
                        state.first = False
                        state.wake.set()

            reader = asyncio.create_task(read())
            try:
                while True:
                    await state.wake.wait()
                    state.wake.clear()
                    state.outstanding = 1
                    await context.write(self.payload)
            finally:
                reader.cancel()
                self.streams.remove(state)

        method = grpc.stream_stream_rpc_method_handler(
            handler, request_deserializer=None, response_serializer=None
        )
        from slate.xds.server import SERVER_OPTIONS

        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "envoy.service.discovery.v3.AggregatedDiscoveryService",
                    {"StreamAggregatedResources": method},
                ),
            )
        )
        port: int = self._server.add_insecure_port(address)
        await self._server.start()
        return port

    def push(self) -> Any:
        started = time.monotonic()
        for s in self.streams:
            s.wake.set()
        from slate.xds.cache import UpdateResult

        return UpdateResult(0, 0, len(self.streams), time.monotonic() - started)

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)


class FloorStream:
    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.first = True
        self.outstanding = 0


def _stat_cpu(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def usage() -> dict[str, float]:
    """CPU seconds of this process (all threads, and its main thread alone: the event loop) and
    its RSS."""
    cpu = _stat_cpu("/proc/self/stat")
    main_cpu = _stat_cpu(f"/proc/self/task/{os.getpid()}/stat")
    rss = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return {"cpu_s": cpu, "main_cpu_s": main_cpu, "rss": rss}


def say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# ---- proxy side -------------------------------------------------------------------------------


class Server:
    """The server subprocess and its command pipe."""

    def __init__(self, floor: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-floor" if floor else "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self.read()
        self.port = int(self.ready["ready"])

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench server exited")
        out: dict[str, Any] = json.loads(line)
        return out

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return await asyncio.to_thread(self.read)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Proxies:
    """N simulated proxies; `arrivals[i]` is when stream i got its latest response.

    A stream that fails is counted in `failed` and no longer waited for."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.responses = [0] * n
        self.arrivals = [0.0] * n
        self.failed: set[int] = set()
        self.goal = 1
        self.limit = n
        self.done = 0
        self.reached = asyncio.Event()

    def expect(self, goal: int, limit: int | None = None) -> None:
        """From now, wait for streams [0, limit) to have `goal` responses each."""
        self.goal = goal
        self.limit = self.n if limit is None else limit
        self.done = sum(
            1 for i in range(self.limit) if self.responses[i] >= goal or i in self.failed
        )
        self.reached = asyncio.Event()
        self._check()

    def _check(self) -> None:
        if self.done >= self.limit:
            self.reached.set()

    def got(self, i: int) -> None:
        self.arrivals[i] = time.monotonic()
        self.responses[i] += 1
        if self.responses[i] == self.goal and i < self.limit and i not in self.failed:
            self.done += 1
            self._check()

    def fail(self, i: int) -> None:
        if i not in self.failed:
            self.failed.add(i)
            if i < self.limit and self.responses[i] < self.goal:
                self.done += 1
                self._check()


async def run_proxy(
    i: int,
    channel: Any,
    mode: str,
    source: str,
    cluster: str,
    names: tuple[str, ...],
    proxies: Proxies,
) -> None:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from slate.xds.resources import CLA_TYPE_URL

    node = base_pb2.Node(id=f"proxy-{i}", cluster=source)
    node.locality.region = cluster
    if mode == "sotw":
        method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
        first: Any = discovery_pb2.DiscoveryRequest(
            node=node, resource_names=names, type_url=CLA_TYPE_URL
        )
        parse: Any = discovery_pb2.DiscoveryResponse.FromString
    else:
        method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
        first = discovery_pb2.DeltaDiscoveryRequest(
            node=node, resource_names_subscribe=names, type_url=CLA_TYPE_URL
        )
        parse = discovery_pb2.DeltaDiscoveryResponse.FromString
    call = channel.stream_stream(
        method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None
    )(wait_for_ready=True)
    try:
        await call.write(first)
        async for data in call:
            resp = parse(data)
            proxies.got(i)
            if mode == "sotw":
                ack: Any = discovery_pb2.DiscoveryRequest(
                    resource_names=names,
                    type_url=CLA_TYPE_URL,
                    response_nonce=resp.nonce,
                    version_info=resp.version_info,
                )
            else:
                ack = discovery_pb2.DeltaDiscoveryRequest(
                    type_url=CLA_TYPE_URL, response_nonce=resp.nonce
                )
            await call.write(ack)
    except asyncio.CancelledError:
        call.cancel()
        raise
    except Exception:
        proxies.fail(i)


# ---- the lean simulated proxy: a minimal HTTP/2 gRPC client on a plain asyncio protocol ----------
#
# A real proxy is compiled code; a grpc.aio client in Python costs about as much CPU per message as
# the server does, so on a shared 2-core machine it would measure the harness, not slate. This
# client speaks just enough HTTP/2 for one gRPC bidi stream per connection: it reads every byte of
# every response frame, reassembles the gRPC messages, walks the top-level fields of each response
# (the part an ACK needs: version_info and nonce) and answers with a real ACK request that the
# server parses and processes. A sample of streams also parse every response completely.

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW, _CONT = 0, 1, 3, 4, 6, 7, 8, 9
_END_STREAM, _ACK_FLAG, _END_HEADERS, _PADDED = 0x1, 0x1, 0x4, 0x8
_BIG_WINDOW = 1 << 30
_FULL_PARSE_EVERY = 100  # streams i % this == 0 parse every response with protobuf as well


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    head = len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big")
    return head + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(headers: list[tuple[str, str]]) -> bytes:
    """Headers as HPACK literals without indexing, new names, no Huffman (always valid)."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + _hpack_int(len(name), 7) + name.encode()
        out += _hpack_int(len(value), 7) + value.encode()
    return bytes(out)


def _grpc_message(body: bytes) -> bytes:
    return b"\x00" + len(body).to_bytes(4, "big") + body


def _top_fields(msg: bytes, wanted: tuple[int, ...]) -> tuple[dict[int, bytes], int]:
    """The length-delimited top-level fields numbered in `wanted` (last one wins, as protobuf
    merges), and how many top-level fields the message has. Raises ValueError if malformed."""
    got: dict[int, bytes] = {}
    pos, end, count = 0, len(msg), 0
    while pos < end:
        tag = shift = 0
        while True:
            b = msg[pos]
            pos += 1
            tag |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if tag & 7 == 0:  # a varint (e.g. `canary`): skip it
            while msg[pos] & 0x80:
                pos += 1
            pos += 1
            count += 1
            continue
        if tag & 7 != 2:
            raise ValueError(f"unexpected wire type in field {tag >> 3}")
        size = shift = 0
        while True:
            b = msg[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if pos + size > end:
            raise ValueError("truncated field")
        if tag >> 3 in wanted:
            got[tag >> 3] = msg[pos : pos + size]
        pos += size
        count += 1
    return got, count


class LeanProxy(asyncio.Protocol):
    """One simulated proxy: one connection, one ADS stream (stream id 1), ACKing every response."""

    def __init__(
        self, i: int, mode: str, port: int, first: bytes, ack_template: bytes, proxies: Proxies
    ) -> None:
        self.i, self.mode, self.proxies = i, mode, proxies
        self.first = first
        self.ack_template = ack_template  # the ACK request without version_info / nonce
        self.port = port
        self.buf = b""
        self.msg = b""
        self.consumed = 0
        self.transport: asyncio.Transport | None = None
        self.full_parse = i % _FULL_PARSE_EVERY == 0
        self.closing = False

    def itself(self) -> LeanProxy:
        """The protocol factory `create_connection` wants."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        method = "StreamAggregatedResources" if self.mode == "sotw" else "DeltaAggregatedResources"
        headers = _hpack_literal(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}"),
                (":authority", f"127.0.0.1:{self.port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        settings = (
            struct_pack_setting(2, 0)  # no server push
            + struct_pack_setting(4, _BIG_WINDOW)
        )  # stream receive window
        transport.write(
            _H2_PREFACE
            + _h2_frame(_SETTINGS, 0, 0, settings)
            + _h2_frame(_WINDOW, 0, 0, (_BIG_WINDOW - 65535).to_bytes(4, "big"))
            + _h2_frame(_HEADERS, _END_HEADERS, 1, headers)
            + _h2_frame(_DATA, 0, 1, _grpc_message(self.first))
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while end - pos >= 9:
            size = int.from_bytes(buf[pos : pos + 3], "big")
            if end - pos < 9 + size:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9 : pos + 9 + size]
            pos += 9 + size
            if kind == _DATA:
                if flags & _PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                self.consumed += size
                self._grpc_data(payload)
            elif kind in (_HEADERS, _CONT):
                if flags & _END_STREAM and stream == 1:
                    self._ended()  # trailers: the server ended the stream
            elif kind == _SETTINGS:
                if not flags & _ACK_FLAG:
                    self._write(_h2_frame(_SETTINGS, _ACK_FLAG, 0, b""))
            elif kind == _PING:
                if not flags & _ACK_FLAG:
                    self._write(_h2_frame(_PING, _ACK_FLAG, 0, payload))
            elif kind in (_RST, _GOAWAY):
                self._ended()
        self.buf = buf[pos:]
        if self.consumed > _BIG_WINDOW // 2:  # keep both receive windows open
            inc = self.consumed.to_bytes(4, "big")
            self.consumed = 0
            self._write(_h2_frame(_WINDOW, 0, 0, inc) + _h2_frame(_WINDOW, 0, 1, inc))

    def _grpc_data(self, payload: bytes) -> None:
        msg = self.msg + payload if self.msg else payload
        while len(msg) >= 5:
            size = int.from_bytes(msg[1:5], "big")
            if len(msg) < 5 + size:
                break
            self._response(msg[5 : 5 + size])
            msg = msg[5 + size :]
        self.msg = msg

    def _response(self, body: bytes) -> None:
        try:
            if self.mode == "sotw":
                got, _ = _top_fields(body, (1, 5))
                ack = self.ack_template + _field(1, got.get(1, b"")) + _field(5, got[5])
            else:
                got, _ = _top_fields(body, (5,))
                ack = self.ack_template + _field(6, got[5])
            if self.full_parse and _full_parse(self.mode, body) != got[5]:
                raise ValueError("the field walk and protobuf disagree on the nonce")
        except (ValueError, KeyError, IndexError, DecodeError):
            self._ended()
            return
        self.proxies.got(self.i)
        self._write(_h2_frame(_DATA, 0, 1, _grpc_message(ack)))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _ended(self) -> None:
        if not self.closing:
            self.proxies.fail(self.i)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.proxies.fail(self.i)


def struct_pack_setting(ident: int, value: int) -> bytes:
    return ident.to_bytes(2, "big") + value.to_bytes(4, "big")


def _field(number: int, payload: bytes) -> bytes:
    from slate.xds.wire import field

    return field(number, payload)


def _full_parse(mode: str, body: bytes) -> bytes:
    """Parse a response and every CLA in it with protobuf; returns its nonce."""
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    if mode == "sotw":
        resp = discovery_pb2.DiscoveryResponse.FromString(body)
        for r in resp.resources:
            endpoint_pb2.ClusterLoadAssignment.FromString(r.value)
        return str(resp.nonce).encode()
    delta = discovery_pb2.DeltaDiscoveryResponse.FromString(body)
    for dr in delta.resources:
        endpoint_pb2.ClusterLoadAssignment.FromString(dr.resource.value)
    return str(delta.nonce).encode()


def lean_requests(
    i: int, mode: str, source: str, cluster: str, names: tuple[str, ...]
) -> tuple[bytes, bytes]:
    """(first request, ACK template) for proxy i, serialised by protobuf."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from slate.xds.resources import CLA_TYPE_URL

    node = base_pb2.Node(id=f"proxy-{i}", cluster=source)
    node.locality.region = cluster
    if mode == "sotw":
        first = discovery_pb2.DiscoveryRequest(
            node=node, resource_names=names, type_url=CLA_TYPE_URL
        )
        ack = discovery_pb2.DiscoveryRequest(resource_names=names, type_url=CLA_TYPE_URL)
    else:
        first = discovery_pb2.DeltaDiscoveryRequest(
            node=node, resource_names_subscribe=names, type_url=CLA_TYPE_URL
        )
        ack = discovery_pb2.DeltaDiscoveryRequest(type_url=CLA_TYPE_URL)
    return first.SerializeToString(), ack.SerializeToString()


async def wait_acked(server: Server, deadline: float) -> dict[str, Any]:
    while True:
        stats = await server.ask("stats")
        if stats["unacked"] == 0 or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.1)  # each poll walks every stream in the server


def machine_busy() -> float:
    """CPU seconds all processes on the machine have used so far (busy time over all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK  # all but idle and iowait


def own_cpu() -> float:
    """CPU seconds of this process (all its threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(n: int, mode: str, floor: bool = False, client: str = "lean") -> dict[str, Any]:
    import gc

    import grpc

    mesh = build_mesh()
    assignment = assign_streams(mesh, n)
    server = Server(floor)
    tasks: list[asyncio.Task[None]] = []
    channels: list[Any] = []
    lean: list[LeanProxy] = []
    out: dict[str, Any] = {
        "streams": n,
        "mode": mode,
        "client": client,
        "views": len(set(assignment)),
    }
    loop = asyncio.get_running_loop()
    try:
        base = await server.ask("stats")
        proxies = Proxies(n)
        t0 = time.monotonic()
        for start in range(0, n, CONNECT_BATCH):
            end = min(n, start + CONNECT_BATCH)
            proxies.expect(1, end)
            connects = []
            for i in range(start, end):
                src, cluster = assignment[i]
                # Own connection per proxy, as real sidecars have.
                if client == "lean":
                    first, ack = lean_requests(i, mode, src, cluster, mesh.calls[src])
                    proto = LeanProxy(i, mode, server.port, first, ack, proxies)
                    lean.append(proto)
                    connects.append(loop.create_connection(proto.itself, "127.0.0.1", server.port))
                    continue
                ch = grpc.aio.insecure_channel(
                    f"127.0.0.1:{server.port}", options=[("grpc.use_local_subchannel_pool", 1)]
                )
                channels.append(ch)
                tasks.append(
                    asyncio.create_task(
                        run_proxy(i, ch, mode, src, cluster, mesh.calls[src], proxies)
                    )
                )
            for i, res in enumerate(await asyncio.gather(*connects, return_exceptions=True)):
                if isinstance(res, BaseException):
                    proxies.fail(start + i)
            # Connect in waves, as proxies do not all start in the same millisecond.
            await asyncio.wait_for(proxies.reached.wait(), PHASE_TIMEOUT_S)
        out["connect_s"] = time.monotonic() - t0
        connected = await wait_acked(server, time.monotonic() + PHASE_TIMEOUT_S)
        out["rss_per_stream_kb"] = (connected["rss"] - base["rss"]) / n / 1024
        out["server_rss_mb"] = connected["rss"] / 2**20
        # The simulated proxies share the 2 cores with the server: keep them lean.
        gc.collect()
        gc.freeze()

        fanout, cpu, build, client_cpu, loop_cpu, other_cpu = [], [], [], [], [], []
        window: list[float] = []
        for k in range(1, UPDATES_PER_SIZE + 1):
            proxies.expect(k + 1)
            before = await server.ask("stats")
            mine, busy, t_upd = own_cpu(), machine_busy(), time.monotonic()
            upd = await server.ask(f"update {k}")
            await asyncio.wait_for(proxies.reached.wait(), PHASE_TIMEOUT_S)
            fanout.append(max(proxies.arrivals) - upd["started"])
            after = await wait_acked(server, time.monotonic() + PHASE_TIMEOUT_S)
            out["unacked"] = max(out.get("unacked", 0), after["unacked"])
            client_cpu.append(own_cpu() - mine)
            cpu.append(after["cpu_s"] - before["cpu_s"])
            other_cpu.append(machine_busy() - busy - client_cpu[-1] - cpu[-1])
            window.append(time.monotonic() - t_upd)
            loop_cpu.append(after["main_cpu_s"] - before["main_cpu_s"])
            build.append(upd["build_s"])
            out["changed"] = upd["changed"]
        out["fanout_s"] = fanout
        out["cpu_s"] = cpu
        out["client_cpu_s"] = client_cpu
        out["loop_cpu_s"] = loop_cpu
        out["other_cpu_s"] = other_cpu
        out["window_s"] = window
        out["build_s"] = build
        out["errors"] = len(proxies.failed)
        if floor:
            return out

        # One view changes: only its streams hear.
        src, cluster = assignment[0]
        upd = await server.ask(f"update 99 {src} {cluster} {UPDATES_PER_SIZE}")
        out["one_view"] = {
            "view": f"{src}@{cluster}",
            "notified": upd["notified"],
            "streams_in_view": assignment.count((src, cluster)),
        }
        out["errors"] = len(proxies.failed)
    finally:
        for p in lean:
            p.closing = True
            if p.transport is not None:
                p.transport.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
        # Let the server see every stream end before stopping it: streams still ending when
        # grpc.aio stops a server are each logged as an error.
        deadline = time.monotonic() + 10
        with contextlib.suppress(Exception):
            while (await server.ask("stats"))["streams"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        server.close()
    return out


def _med(r: dict[str, Any], key: str) -> float:
    return float(statistics.median(r[key]))


def report(r: dict[str, Any], floor: dict[str, Any] | None) -> None:
    n = r["streams"]
    cores = os.cpu_count() or 1
    best, med = min(r["fanout_s"]), _med(r, "fanout_s")
    cpu, loop_cpu = _med(r, "cpu_s"), _med(r, "loop_cpu_s")
    ccpu, other = _med(r, "client_cpu_s"), _med(r, "other_cpu_s")
    busy = [
        (s + c + o) / (cores * w)
        for s, c, o, w in zip(
            r["cpu_s"], r["client_cpu_s"], r["other_cpu_s"], r["window_s"], strict=True
        )
    ]
    print(f"\n{n:>6} streams ({r['mode']}, {r['views']} views, {r['changed']} CLAs per update)")
    print(f"  connect + first response, all streams : {r['connect_s']:.2f} s")
    print(
        f"  update -> last stream's response      : median {med:.3f} s, best {best:.3f} s "
        f"({', '.join(f'{x:.3f}' for x in r['fanout_s'])})"
    )
    print(f"  view rebuild in the update call       : {_med(r, 'build_s'):.3f} s")
    print(
        f"  server CPU, update until all ACKed    : {cpu:.2f} s = {1000 * cpu / n:.3f} CPU-ms "
        f"per stream; event loop thread {loop_cpu:.2f} s, gRPC core threads {cpu - loop_cpu:.2f} s"
    )
    print(f"  simulated proxies' CPU meanwhile      : {ccpu:.2f} s ({r['client']} clients)")
    print(f"  other processes' CPU meanwhile        : {other:.2f} s")
    print(
        f"  all {cores} cores busy                      : {100 * statistics.median(busy):.0f}% "
        f"of the window (update until all ACKed, median {_med(r, 'window_s'):.2f} s)"
    )
    print(
        f"  server RSS                            : {r['server_rss_mb']:.0f} MB, "
        f"{r['rss_per_stream_kb']:.1f} KB per stream"
    )
    print(
        f"  one-view update ({r['one_view']['view']}): pushed to "
        f"{r['one_view']['notified']} of {n} streams "
        f"({r['one_view']['streams_in_view']} in that view)"
    )
    per_2000 = cpu / n * ISTIOD_SIDECARS_PER_VCPU
    print(
        f"  istiod sizing (1 vCPU per {ISTIOD_SIDECARS_PER_VCPU:,} sidecars): a full push to "
        f"{ISTIOD_SIDECARS_PER_VCPU:,} streams costs {per_2000:.2f} CPU-s"
    )
    if floor is not None:
        fl, fc = _med(floor, "fanout_s"), _med(floor, "cpu_s")
        print(
            f"  bare grpc.aio floor, same run         : {fl:.3f} s to last, {fc:.2f} CPU-s "
            f"(proxies {_med(floor, 'client_cpu_s'):.2f}) -> slate takes {med / fl:.2f}x the "
            f"time, {cpu / fc:.2f}x the server CPU"
        )
    if r["errors"]:
        print(f"  streams that failed: {r['errors']}")
    if r["unacked"]:
        print(
            f"  responses still unACKed at the server after {PHASE_TIMEOUT_S:.0f} s: {r['unacked']}"
        )
    if n == 10_000:
        verdict = "within" if med < TARGET_S else "above"
        print(
            f"  target: a new weight set to 10,000 streams in < {TARGET_S} s: median {med:.2f} s "
            f"is {verdict} it ({med / TARGET_S:.2f} of the budget)"
        )


def summary(rows: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
    print(
        "\nsummary (medians; CPU in CPU-s per full update, from the update until every ACK is "
        "processed)\n"
        "  mode   streams  to last  vs 2 s  server CPU (loop)  proxies  other   RSS/stream"
        "  floor: to last  CPU   slate/floor time  CPU-s per 2,000"
    )
    for r, f in rows:
        n, med, cpu = r["streams"], _med(r, "fanout_s"), _med(r, "cpu_s")
        floor = (
            f"{_med(f, 'fanout_s'):>13.3f} s {_med(f, 'cpu_s'):5.2f}  "
            f"{med / _med(f, 'fanout_s'):>15.2f}x"
            if f is not None
            else f"{'-':>15} {'-':>5}  {'-':>16}"
        )
        print(
            f"  {r['mode']:<6} {n:>7,} {med:>7.3f} s {med / TARGET_S:>6.2f}  "
            f"{cpu:>9.2f} ({_med(r, 'loop_cpu_s'):4.2f})  {_med(r, 'client_cpu_s'):>7.2f}  "
            f"{_med(r, 'other_cpu_s'):>5.2f}  {r['rss_per_stream_kb']:>7.1f} KB  {floor}  "
            f"{cpu / n * ISTIOD_SIDECARS_PER_VCPU:>15.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100,1000,5000,10000")
    parser.add_argument("--mode", choices=["sotw", "delta", "both"], default="both")
    parser.add_argument(
        "--client",
        choices=["lean", "grpc"],
        default="lean",
        help="simulated proxies: a minimal HTTP/2 client (default) or grpc.aio clients",
    )
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip the bare grpc.aio server (same transport, no xDS logic) measured per size",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before anything imports grpc
    if args.serve or args.serve_floor:
        serve(args.port, floor=args.serve_floor)
        return
    modes = ["sotw", "delta"] if args.mode == "both" else [args.mode]
    print(
        f"xDS fan-out, {os.cpu_count()} cores; server in its own process; {args.client} "
        f"simulated proxies in this one, one connection each; {UPDATES_PER_SIZE} updates per size"
    )
    started = time.monotonic()
    rows: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for n in (int(x) for x in args.sizes.split(",")):
        floor = (
            asyncio.run(measure(n, "sotw", floor=True, client=args.client)) if args.floor else None
        )
        for mode in modes:
            r = asyncio.run(measure(n, mode, client=args.client))
            report(r, floor)
            rows.append((r, floor))
    summary(rows)
    print(f"\n(bench wall {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
