"""`slate xds serve`: the xDS server on its own, fed by a route file and an endpoints file.

    slate xds serve --routes ROUTES.json --endpoints ENDPOINTS.yaml [--port 18000]

ROUTES.json is `slate solve --format json` output; ENDPOINTS.yaml is described in endpoints.py.
Both are re-read when they change; a bad file at start-up exits 2 with one line naming the field,
a bad file later is logged and the previous state keeps being served. Prints one line when ready:
`slate xds: serving on HOST:PORT` (plus ` metrics on HOST:PORT` with --metrics-port).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from slate.logs import LEVELS, configure, kv
from slate.model.errors import InputError

if TYPE_CHECKING:  # grpc and protobuf load only when serving (`slate --help` stays fast)
    from slate.model.routing import Routing
    from slate.xds.cache import XdsCache
    from slate.xds.endpoints import EndpointSet, StaticEndpointSource
    from slate.xds.metrics import XdsMetrics

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
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port"
    )
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
    routes_signature = file_signature(args.routes)
    routing = load_routing(args.routes)  # InputError -> exit 2
    metrics = XdsMetrics()
    source = StaticEndpointSource(
        args.endpoints,
        args.reload_interval,
        on_reject=lambda _r: metrics.reloads.labels("endpoints", "rejected").inc(),
    )
    cache = XdsCache(
        routing,
        source.current(),
        ClaOptions(weight_total=args.weight_total, istio_tls_metadata=args.istio_tls_metadata),
        metrics,
    )
    return asyncio.run(_run(args, cache, source, metrics, routes_signature))


async def _run(
    args: argparse.Namespace,
    cache: XdsCache,
    source: StaticEndpointSource,
    metrics: XdsMetrics,
    routes_signature: tuple[int, int, int] | None,
) -> int:
    import asyncio
    import signal

    from slate.model.routing import load_routing
    from slate.xds.filewatch import watch_file
    from slate.xds.server import XdsServer, tune_gc

    server = XdsServer(cache, metrics=metrics)
    try:
        port = await server.start(f"{args.host}:{args.port}")
    except OSError as e:
        raise InputError("--port", str(e)) from None
    ready = f"slate xds: serving on {args.host}:{port}"
    http = None
    if args.metrics_port is not None:
        try:
            http, _thread = metrics.serve_http(args.metrics_port, args.host)
        except OSError as e:
            await server.stop(grace=0)
            raise InputError("--metrics-port", f"cannot listen: {e.strerror}") from None
        ready += f" metrics on {args.host}:{http.server_port}"
    tune_gc()
    print(ready, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def follow_routes() -> None:
        def rejected(_reason: str) -> None:
            metrics.reloads.labels("routes", "rejected").inc()

        async for routing in watch_file(
            args.routes, load_routing, args.reload_interval, routes_signature, rejected
        ):
            _apply(cache, metrics, "routes", routing=routing)

    async def follow_endpoints() -> None:
        async for endpoints in source.updates():
            _apply(cache, metrics, "endpoints", endpoints=endpoints)

    tasks = [asyncio.create_task(follow_routes()), asyncio.create_task(follow_endpoints())]
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await server.stop(grace=1.0)
        if http is not None:
            http.shutdown()
    return 0


def _apply(
    cache: XdsCache,
    metrics: XdsMetrics,
    file: str,
    routing: Routing | None = None,
    endpoints: EndpointSet | None = None,
) -> None:
    result = cache.update(routing=routing, endpoints=endpoints)
    metrics.reloads.labels(file, "applied").inc()
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
