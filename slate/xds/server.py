"""The gRPC server: ADS and EDS, state-of-the-world and delta, over `grpc.aio`.

Each RPC gets a protocol state object (protocol.py) and two tasks: a reader that feeds it requests,
and the RPC's own task, which sleeps until the state has something to send (a request or a cache
change woke it) and writes it. Responses are written as pre-assembled bytes (the methods are
registered with no response serialiser): the body shared by every stream of a view, plus the
stream's own nonce field, so a view's resources are serialised once however many streams carry them.

A request that does not decode ends its stream with INVALID_ARGUMENT; one the protocol refuses (no
node, a node that maps to no view, a type other than ClusterLoadAssignment) with the status the
protocol chose; an unexpected exception with INTERNAL. The server and other streams carry on.
The gRPC health service reports SERVING for the server and each xDS service while it runs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from slate.logs import kv
from slate.xds.cache import ConfigCache, XdsCache
from slate.xds.callbacks import CallbackList, Callbacks, MetricsCallbacks, NackHistory
from slate.xds.metrics import XdsMetrics
from slate.xds.protocol import (
    ADS,
    DEFAULT_LIMITS,
    DELTA,
    EDS,
    SOTW,
    AdsStream,
    DeltaStream,
    Limits,
    NackRecord,
    ProtocolError,
    SotwStream,
    StreamState,
    clip,
)
from slate.xds.resources import CLA_TYPE_URL
from slate.xds.security import Authorizer, Refused, peer_identities
from slate.xds.typed import UnservedCache, derived_caches
from slate.xds.views import NodeMapper, ViewKey, plain_envoy_view

log = logging.getLogger("slate.xds.server")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
EDS_SERVICE = "envoy.service.endpoint.v3.EndpointDiscoveryService"

SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # gRPC turns SO_REUSEPORT on by default, which lets a second server bind the same port and
    # silently take half the proxies; binding a busy port should fail instead.
    ("grpc.so_reuseport", 0),
    # BDP probing sends a PING with nearly every response (every proxy answers it) to size the
    # receive window for bulk downloads; requests here are small ACKs, so it only costs CPU: a
    # full push to 10,000 streams sent ~11,000 extra PINGs.
    ("grpc.http2.bdp_probe", 0),
]
CONNECTION_AGE_GRACE_S = 10.0
"""After a connection's max age, how long its streams may go on before they are cancelled (the
proxy has meanwhile opened its new connection; its config stays in place while it does)."""


class XdsServer:
    """Serves `cache` to Envoy proxies. Start with `await start()`, end with `await stop()`.

    `streams` holds the live streams' protocol state; `recent_nacks` the latest rejected responses
    (for status reporting); `metrics` the Prometheus metrics (the cache's, if it has them).
    """

    def __init__(
        self,
        cache: ConfigCache,
        *,
        node_mapper: NodeMapper = plain_envoy_view,
        metrics: XdsMetrics | None = None,
        nack_history: int = 100,
        limits: Limits = DEFAULT_LIMITS,
        callbacks: Sequence[Callbacks] = (),
        caches: Mapping[str, ConfigCache] | None = None,
        credentials: grpc.ServerCredentials | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.cache = cache
        self.credentials = credentials
        """TLS/mTLS (security.server_credentials); None = plaintext."""
        self.authorizer = authorizer
        """Which views a peer's certificate identity may read; None = any."""
        base = getattr(cache, "base_cache", cache)
        if caches is None:
            caches = derived_caches(base) if isinstance(base, XdsCache) else {}
        self.caches: dict[str, ConfigCache] = {CLA_TYPE_URL: cache, **caches}
        """Per type URL, the cache ADS streams are served from (CLAs from `cache`; Listeners,
        RouteConfigurations and Clusters derived from it; any other type: nothing)."""
        self._base = base
        self.limits = limits
        self.node_mapper = node_mapper
        own = getattr(cache, "metrics", None)
        self.metrics = metrics if metrics is not None else (own or XdsMetrics())
        self.streams: set[StreamState] = set()
        history = NackHistory(nack_history)
        self.recent_nacks: collections.deque[NackRecord] = history.records
        self.callbacks = CallbackList(
            [MetricsCallbacks(self.metrics, cache.knows_view), history, *callbacks]
        )
        """Every stream's hooks: metrics and the NACK history first, then the embedding's."""
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._closing = False
        self._wakes: set[asyncio.Event] = set()

    async def start(self, address: str = "127.0.0.1:0") -> int:
        """Listen on `address` (host:port, port 0 = any free port); returns the port.

        Raises OSError if the address cannot be bound."""
        options: list[tuple[str, int]] = [
            *SERVER_OPTIONS,
            ("grpc.max_receive_message_length", self.limits.max_request_bytes),
        ]
        if self.limits.max_connection_age_s > 0:
            # gRPC jitters the age by +-10%, so proxies connected together do not all come back
            # at once.
            options += [
                ("grpc.max_connection_age_ms", round(self.limits.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", round(CONNECTION_AGE_GRACE_S * 1000)),
            ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers(self._handlers())
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            if self.credentials is not None:
                port: int = server.add_secure_port(address, self.credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {address} (in use, or not a local address)")
        await server.start()
        for service in ("", ADS_SERVICE, EDS_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        log.info("%s", kv("listening", address=address.rsplit(":", 1)[0], port=port))
        return port

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting streams, give live ones `grace` seconds, then cancel them."""
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        # End every live stream from its own handler (the proxy sees the stream close and
        # reconnects elsewhere). Left to grpc.aio, the handlers would be cancelled after `grace`,
        # and grpc logs each cancelled handler as an error with a traceback.
        self._closing = True
        for wake in list(self._wakes):
            wake.set()
        await self._server.stop(grace)
        self._server = None
        self._closing = False

    @property
    def serving(self) -> bool:
        """Started and not stopping (what /healthz reports)."""
        return self._server is not None and not self._closing

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # ---- RPC plumbing -------------------------------------------------------------------------

    def _handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        sotw = discovery_pb2.DiscoveryRequest.FromString
        delta = discovery_pb2.DeltaDiscoveryRequest.FromString

        def method(behaviour: Any, deserializer: Any) -> grpc.RpcMethodHandler:
            # No response serialiser: the protocol layer hands over finished bytes.
            return grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=deserializer, response_serializer=None
            )

        ads = {
            "StreamAggregatedResources": method(self._ads_sotw, sotw),
            "DeltaAggregatedResources": method(self._ads_delta, delta),
        }
        eds = {
            "StreamEndpoints": method(self._eds_sotw, sotw),
            "DeltaEndpoints": method(self._eds_delta, delta),
        }
        return (
            grpc.method_handlers_generic_handler(ADS_SERVICE, ads),
            grpc.method_handlers_generic_handler(EDS_SERVICE, eds),
        )

    async def _ads_sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(requests, context, ADS, SOTW)

    async def _ads_delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(requests, context, ADS, DELTA)

    async def _eds_sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(requests, context, EDS, SOTW)

    async def _eds_delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(requests, context, EDS, DELTA)

    async def _serve(self, requests: AsyncIterator[Any], context: Any, api: str, mode: str) -> None:
        if self._closing:
            return
        wake = asyncio.Event()
        self._wakes.add(wake)
        kind: type[StreamState] = SotwStream if mode == SOTW else DeltaStream
        callbacks = self.callbacks
        node_mapper = self.node_mapper
        authorizer = self.authorizer
        if authorizer is not None:
            identities = peer_identities(context)
            peer = str(context.peer())

            def node_mapper(node: Any) -> ViewKey:
                view = self.node_mapper(node)
                try:
                    authorizer.check(identities, peer, view)
                except Refused as e:
                    raise ProtocolError(grpc.StatusCode.PERMISSION_DENIED, e.message) from None
                return view

        stream: Any
        if api == ADS:
            base = self._base
            stream = AdsStream(
                kind,
                self.caches,
                lambda type_url: UnservedCache(type_url, base),
                node_mapper,
                wake=wake.set,
                limits=self.limits,
                callbacks=callbacks,
            )
        else:
            stream = kind(
                self.cache,
                node_mapper,
                api=api,
                wake=wake.set,
                limits=self.limits,
                callbacks=callbacks,
            )
        self.streams.add(stream)
        state: dict[str, Any] = {"ended": False, "error": None, "opened": False}

        async def read() -> None:
            try:
                async for req in requests:
                    stream.on_request(req)
                    if not state["opened"]:
                        state["opened"] = True
                        callbacks.on_stream_open(stream)
                    callbacks.on_stream_request(stream, req)
                    if stream.has_pending:  # a plain ACK usually leaves nothing to send
                        wake.set()
            except ProtocolError as e:
                state["error"] = e
            except DecodeError as e:
                state["error"] = ProtocolError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {e}"
                )
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, grpc.aio.AbortError, grpc.aio.UsageError):
                pass  # the peer went away, or the RPC ended under us
            except Exception:
                log.exception(
                    "%s", kv("stream_failed", node=clip(stream.node_id), view=clip(stream.view))
                )
                state["error"] = ProtocolError(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                state["ended"] = True
                wake.set()

        reader = asyncio.create_task(read())
        latency = self.metrics.push_latency.labels(mode)
        try:
            while True:
                await wake.wait()
                wake.clear()
                error: ProtocolError | None = state["error"]
                if error is not None:
                    callbacks.on_stream_error(stream, error)
                    log.info(
                        "%s",
                        kv(
                            "stream_refused",
                            node=clip(stream.node_id),
                            api=api,
                            mode=mode,
                            code=error.code.name,
                            reason=clip(error.message),
                        ),
                    )
                    await context.abort(error.code, error.message)
                if state["ended"] or self._closing:
                    return
                while stream.has_pending:
                    out = stream.next_response()  # at most one slice of names
                    if out is not None:
                        await context.write(out.payload)
                        callbacks.on_stream_response(stream, out)
                        if out.started is not None:
                            latency.observe(time.monotonic() - out.started)
                    if stream.has_pending:
                        await asyncio.sleep(0)  # a big subscription: let other streams in
        finally:
            self._wakes.discard(wake)
            reader.cancel()
            stream.close()
            self.streams.discard(stream)
            if state["opened"]:
                callbacks.on_stream_closed(stream)
