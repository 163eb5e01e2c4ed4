"""Prometheus metrics of the xDS server (one registry per server, so tests can run several).

Labels: `api` = ads | eds, `mode` = sotw | delta, `view` = `service@cluster`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

log = logging.getLogger("slate.xds")


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.streams = Gauge(
            "slate_xds_streams", "Connected xDS streams.", ["api", "mode", "view"], registry=r
        )
        self.pushes = Counter("slate_xds_pushes", "Discovery responses sent.", ["mode"], registry=r)
        self.push_latency = Histogram(
            "slate_xds_push_latency_seconds",
            "From a cache update to the response carrying it written to a stream.",
            ["mode"],
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.acks = Counter("slate_xds_acks", "ACKed responses.", ["mode", "view"], registry=r)
        self.nacks = Counter(
            "slate_xds_nacks", "NACKed (rejected) responses.", ["mode", "view"], registry=r
        )
        self.stream_errors = Counter(
            "slate_xds_stream_errors",
            "Streams closed by the server with an error status.",
            ["code"],
            registry=r,
        )
        self.cache_generation = Gauge(
            "slate_xds_cache_generation",
            "Generation of the xDS cache (bumps per update).",
            registry=r,
        )
        self.cache_updates = Counter(
            "slate_xds_cache_updates", "Routing/endpoint updates applied.", registry=r
        )
        self.cache_update_seconds = Histogram(
            "slate_xds_cache_update_seconds",
            "Time to recompute the views for one update.",
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.resources = Gauge(
            "slate_xds_resources", "ClusterLoadAssignments held for watched views.", registry=r
        )
        self.resource_generation = Gauge(
            "slate_xds_resource_generation",
            "Cache generation at which a resource's content last changed (its version).",
            ["view", "resource"],
            registry=r,
        )
        self.reloads = Counter(
            "slate_xds_reloads",
            "Input file reloads by the standalone server.",
            ["file", "result"],
            registry=r,
        )

        self.reload_failures = Counter(
            "slate_xds_reload_failures",
            "Input file changes that could not be read or parsed (the previous state stays).",
            ["file"],
            registry=r,
        )
        self.last_reload_success = Gauge(
            "slate_xds_last_reload_success_timestamp_seconds",
            "Unix time at which an input file was last read and applied successfully.",
            ["file"],
            registry=r,
        )

        self.refused = Counter(
            "slate_xds_refused",
            "Streams refused by authorization, by reason.",
            ["reason"],
            registry=r,
        )

    def reload_rejected(self, file: str) -> None:
        self.reloads.labels(file, "rejected").inc()
        self.reload_failures.labels(file).inc()

    def reload_applied(self, file: str) -> None:
        self.reloads.labels(file, "applied").inc()
        self.last_reload_success.labels(file).set_to_current_time()

    def serve_http(
        self,
        port: int,
        host: str = "127.0.0.1",
        healthy: Callable[[], bool] | None = None,
        tls: ssl.SSLContext | TlsSource | None = None,
    ) -> tuple[WSGIServer, threading.Thread]:
        """`serve_http` of this registry."""
        return serve_http(self.registry, port, host, healthy, tls)


def serve_http(
    registry: CollectorRegistry,
    port: int,
    host: str = "127.0.0.1",
    healthy: Callable[[], bool] | None = None,
    tls: ssl.SSLContext | TlsSource | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve /metrics, and /healthz (200 while `healthy()`, else 503), on host:port from a
    daemon thread (port 0 picks a free one; IPv6 literals work); HTTPS with `tls` (a server
    context, or a source of the current one per connection, which is how rotated certificates
    apply: security.HttpsCredentials; with a client CA loaded and CERT_REQUIRED, only clients
    with a certificate it signed).

    Hand-written rather than prometheus_client's start_http_server because /healthz shares the
    port, and the TLS handshake runs in each request's thread: a client that stalls mid-handshake
    holds its own thread (10 s at most), never the accept loop."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok = healthy() if healthy is not None else True
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not serving\n"]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A failed handshake or a client gone mid-request: not worth a traceback on stderr.
            log.debug("metrics_http_error peer=%s", str(client_address)[:64])

    source: TlsSource | None = _Fixed(tls) if isinstance(tls, ssl.SSLContext) else tls

    class Quiet(WSGIRequestHandler):
        def setup(self) -> None:
            if source is not None:
                conn = source.current().wrap_socket(
                    self.request, server_side=True, do_handshake_on_connect=False
                )
                self.request = conn
                try:
                    conn.settimeout(HANDSHAKE_TIMEOUT_S)
                    conn.do_handshake()
                    conn.settimeout(None)
                except BaseException:
                    conn.close()
                    raise
            super().setup()

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.close()  # the server closes the plain socket it accepted

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = make_server(host.strip("[]"), port, app, Server, handler_class=Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


HANDSHAKE_TIMEOUT_S = 10.0


class TlsSource(Protocol):
    """The server SSLContext to use for the next connection."""

    def current(self) -> ssl.SSLContext: ...


@dataclass(frozen=True)
class _Fixed:
    ctx: ssl.SSLContext

    def current(self) -> ssl.SSLContext:
        return self.ctx
