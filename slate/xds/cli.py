"""`slate xds serve`: the xDS server on its own, fed by a route file and an endpoints file.

    slate xds serve --routes ROUTES.json --endpoints ENDPOINTS.yaml [--port 18000]

ROUTES.json is `slate solve --format json` output; ENDPOINTS.yaml is described in endpoints.py.
Both are re-read when they change; a bad file at start-up exits 2 with one line naming the field,
a bad file later is logged and the previous state keeps being served. Prints one line when ready:
`slate xds: serving on HOST:PORT` (plus ` metrics on HOST:PORT` with --metrics-port).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slate.logs import LEVELS, configure, kv
from slate.model.errors import InputError
from slate.model.routing import Routing, load_routing
from slate.xds import defaults
from slate.xds.endpoints import EndpointSet, StaticEndpointSource
from slate.xds.filewatch import describe_failure, file_signature, load_safely, watch_file

if TYPE_CHECKING:  # grpc, protobuf and prometheus_client load only when serving (fast --help)
    from slate.xds.cache import XdsCache
    from slate.xds.metrics import XdsMetrics
    from slate.xds.security import HttpsCredentials

log = logging.getLogger("slate.xds")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("xds", help="serve routing to Envoy over xDS")
    xds_sub = p.add_subparsers(dest="xds_command", required=True, metavar="COMMAND")
    s = xds_sub.add_parser(
        "serve",
        help="run the ADS/EDS server from a route file and an endpoints file",
        description="Serve per-locality ClusterLoadAssignments (ADS and EDS, SotW and delta) "
        "computed from ROUTES.json and ENDPOINTS.yaml; reload them when they change.",
    )
    s.add_argument("--routes", required=True, type=Path, help="`slate solve --format json` output")
    s.add_argument("--endpoints", required=True, type=Path, help="ENDPOINTS.yaml")
    s.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=18000, help="gRPC port (default 18000; 0 = any)")
    s.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics and /healthz on this port (0 = any)",
    )
    s.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="listen address of /metrics and /healthz, separate from --host (default 127.0.0.1)",
    )
    add_security_arguments(s)
    add_metrics_tls_arguments(s)
    s.add_argument(
        "--istio-tls-metadata",
        action="store_true",
        help="tag endpoints with envoy.transport_socket_match {tlsMode: istio} (Istio auto-mTLS)",
    )
    s.add_argument(
        "--weight-total",
        type=int,
        default=10_000,
        help="integer locality weights of a CLA sum to this (default 10000)",
    )
    s.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the input files (default 1)",
    )
    s.add_argument(
        "--max-names",
        type=int,
        default=defaults.MAX_NAMES,
        help="resource names one request may name and one stream may subscribe to "
        f"(default {defaults.MAX_NAMES}); more ends the stream with RESOURCE_EXHAUSTED",
    )
    s.add_argument(
        "--max-request-bytes",
        type=int,
        default=defaults.MAX_REQUEST_BYTES,
        help=f"largest request accepted (default {defaults.MAX_REQUEST_BYTES})",
    )
    s.add_argument(
        "--log-level",
        default=None,
        choices=LEVELS,
        help="default warning (quiet), or as `slate -v` sets it",
    )
    s.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import asyncio

    from slate.model.routing import load_routing
    from slate.xds.cache import XdsCache
    from slate.xds.endpoints import StaticEndpointSource
    from slate.xds.filewatch import file_signature
    from slate.xds.metrics import XdsMetrics
    from slate.xds.resources import ClaOptions

    if args.log_level:
        configure(args.log_level)
    if args.weight_total < 1:
        raise InputError("--weight-total", f"must be >= 1, got {args.weight_total}")
    if not args.reload_interval > 0:
        raise InputError("--reload-interval", f"must be > 0, got {args.reload_interval}")
    if args.max_names < 1:
        raise InputError("--max-names", f"must be >= 1, got {args.max_names}")
    if args.max_request_bytes < 1024:
        raise InputError("--max-request-bytes", f"must be >= 1024, got {args.max_request_bytes}")
    metrics = XdsMetrics()
    # flags and certificates first: InputError -> exit 2
    security = security_from_args(args, metrics)
    metrics_tls = metrics_tls_from_args(args, metrics)
    routes_signature = file_signature(args.routes)
    routing = load_safely(load_routing, args.routes)  # any failure -> InputError -> exit 2
    source = StaticEndpointSource(
        args.endpoints,
        args.reload_interval,
        on_reject=lambda _r: metrics.reload_rejected("endpoints"),
    )
    metrics.last_reload_success.labels("routes").set_to_current_time()
    metrics.last_reload_success.labels("endpoints").set_to_current_time()
    cache = XdsCache(
        routing,
        source.current(),
        ClaOptions(weight_total=args.weight_total, istio_tls_metadata=args.istio_tls_metadata),
        metrics,
    )
    return asyncio.run(_run(args, cache, source, metrics, routes_signature, security, metrics_tls))


async def _run(
    args: argparse.Namespace,
    cache: XdsCache,
    source: StaticEndpointSource,
    metrics: XdsMetrics,
    routes_signature: tuple[int, int, int] | None,
    security: tuple[Any, Any],
    metrics_tls: HttpsCredentials | None = None,
) -> int:
    from slate.runtime import tune_gc
    from slate.xds.protocol import Limits
    from slate.xds.server import XdsServer

    limits = Limits(
        max_names=args.max_names,
        max_request_bytes=args.max_request_bytes,
        max_connection_age_s=args.max_connection_age,
    )
    credentials, authorizer = security
    server = XdsServer(
        cache, metrics=metrics, limits=limits, credentials=credentials, authorizer=authorizer
    )
    try:
        port = await server.start(host_port(args.host, args.port))
    except OSError as e:
        raise InputError("--port", str(e)) from None
    ready = f"slate xds: serving on {host_port(args.host, port)}"
    http = None
    if args.metrics_port is not None:
        try:
            http, _thread = metrics.serve_http(
                args.metrics_port,
                args.metrics_host,
                healthy=lambda: server.serving,
                tls=metrics_tls,
            )
        except OSError as e:
            await server.stop(grace=0)
            raise InputError("--metrics-port", f"cannot listen: {e.strerror}") from None
        ready += f" metrics on {host_port(args.metrics_host, http.server_port)}"
    tune_gc()
    print(ready, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    signature = [routes_signature]

    async def follow_routes() -> None:
        async for routing in watch_file(
            args.routes,
            load_routing,
            args.reload_interval,
            signature[0],
            lambda _reason: metrics.reload_rejected("routes"),
        ):
            signature[0] = file_signature(args.routes)
            _apply(cache, metrics, "routes", routing=routing)

    async def follow_endpoints() -> None:
        async for endpoints in source.updates():
            _apply(cache, metrics, "endpoints", endpoints=endpoints)

    tasks = [
        asyncio.create_task(_supervised("routes", follow_routes, metrics, args.reload_interval)),
        asyncio.create_task(
            _supervised("endpoints", follow_endpoints, metrics, args.reload_interval)
        ),
    ]
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await server.stop(grace=1.0)
        if http is not None:
            http.shutdown()
    return 0


def add_security_arguments(p: argparse.ArgumentParser) -> None:
    """The TLS / mTLS / identity flags of every command that serves xDS (`slate xds serve`,
    `slate run`, `slate operator`): one set of names and checks for all of them."""
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve xDS over TLS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-client-ca",
        type=Path,
        help="PEM CA: require client certificates signed by it (mTLS)",
    )
    p.add_argument(
        "--identity-table",
        type=Path,
        help="YAML: which SPIFFE identities may read which services' views (needs mTLS)",
    )
    p.add_argument(
        "--max-connection-age",
        type=float,
        default=defaults.MAX_CONNECTION_AGE_S,
        metavar="SECONDS",
        help="a proxy reconnects after this long (a new TLS handshake: rotated certificates, CAs "
        f"and identity tables reach every stream); default {defaults.MAX_CONNECTION_AGE_S:g}, "
        "0 = never",
    )


def add_metrics_tls_arguments(p: argparse.ArgumentParser) -> None:
    """HTTPS (and client certificates) for the /metrics and /healthz port."""
    p.add_argument(
        "--metrics-tls-cert", type=Path, help="PEM certificate: serve /metrics over HTTPS"
    )
    p.add_argument("--metrics-tls-key", type=Path, help="PEM private key of --metrics-tls-cert")
    p.add_argument(
        "--metrics-tls-client-ca",
        type=Path,
        help="PEM CA: /metrics only for clients with a certificate it signed",
    )


def metrics_tls_from_args(
    args: argparse.Namespace, metrics: XdsMetrics | None = None
) -> HttpsCredentials | None:
    """The /metrics port's TLS, following rotations of its files (None without the flags; with
    `metrics`, reloads are counted there); InputError naming the flag when they do not go together
    or a file cannot be used."""
    if (args.metrics_tls_cert is None) != (args.metrics_tls_key is None):
        raise InputError(
            "--metrics-tls-cert", "--metrics-tls-cert and --metrics-tls-key go together"
        )
    if args.metrics_tls_client_ca is not None and args.metrics_tls_cert is None:
        raise InputError(
            "--metrics-tls-client-ca", "needs --metrics-tls-cert and --metrics-tls-key"
        )
    if args.metrics_tls_cert is None:
        return None
    if args.metrics_port is None:
        raise InputError("--metrics-tls-cert", "secures the metrics port: needs --metrics-port")
    from slate.xds.security import HttpsCredentials

    return HttpsCredentials(
        args.metrics_tls_cert, args.metrics_tls_key, args.metrics_tls_client_ca, metrics=metrics
    )


def check_security_arguments(args: argparse.Namespace) -> None:
    """InputError naming the flag when the security flags do not go together."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InputError("--tls-cert", "--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise InputError("--tls-client-ca", "needs --tls-cert and --tls-key (mTLS is TLS)")
    if args.identity_table is not None and args.tls_client_ca is None:
        raise InputError(
            "--identity-table", "needs --tls-client-ca: identities come from client certificates"
        )
    age = args.max_connection_age
    most = defaults.MAX_CONNECTION_AGE_LIMIT_S
    if not (age == 0 or 1 <= age <= most):
        raise InputError(
            "--max-connection-age", f"must be 0 (never) or 1 to {most:g} seconds, got {age:g}"
        )


def security_from_args(args: argparse.Namespace, metrics: XdsMetrics) -> tuple[Any, Any]:
    """(credentials, authorizer) from the TLS and identity flags (None, None without them);
    InputError naming the flag if they are inconsistent or a file is unreadable."""
    check_security_arguments(args)
    return server_security(
        metrics,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        identity_table=args.identity_table,
    )


def server_security(
    metrics: XdsMetrics,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
    identity_table: Path | None = None,
) -> tuple[Any, Any]:
    """(credentials, authorizer) for XdsServer from already checked flag values."""
    from slate.xds.security import Authorizer, TlsFiles, load_identity_table, server_credentials

    credentials = None
    if tls_cert is not None and tls_key is not None:
        credentials = server_credentials(TlsFiles(tls_cert, tls_key, tls_client_ca), metrics)
    authorizer = None
    if identity_table is not None:
        table = load_safely(load_identity_table, identity_table)
        authorizer = Authorizer(table, metrics)
    return credentials, authorizer


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 literal in brackets (`[::1]:18000`) as gRPC and URLs want it."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


async def _supervised(
    file: str, follow: Callable[[], Awaitable[None]], metrics: XdsMetrics, interval: float
) -> None:
    """Run a file follower forever: if it fails (a bug, not a bad file: those it skips itself),
    log and count the failure and start it again, so reloads never stop silently."""
    while True:
        try:
            await follow()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            metrics.reload_failures.labels(file).inc()
            reason = describe_failure(e)
            log.error("%s", kv("reload_failed", file=file, reason=reason), exc_info=True)
        await asyncio.sleep(interval)


def _apply(
    cache: XdsCache,
    metrics: XdsMetrics,
    file: str,
    routing: Routing | None = None,
    endpoints: EndpointSet | None = None,
) -> None:
    result = cache.update(routing=routing, endpoints=endpoints)
    metrics.reload_applied(file)
    log.info(
        "%s",
        kv(
            "applied",
            file=file,
            generation=result.generation,
            changed=result.changed,
            notified=result.notified,
            seconds=f"{result.seconds:.4f}",
        ),
    )
