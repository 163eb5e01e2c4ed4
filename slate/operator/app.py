"""One operator replica: what runs always, and what runs only while it leads.

Always (every replica, so proxies may connect to any):
- the xDS server, serving a `FollowerCache` fed from the policies' `status.routes` (follower.py),
  with Istio sidecar and plain-Envoy node mapping;
- EndpointSlice watches of the local and remote clusters (endpoints.py), through the xDS
  `Debouncer`;
- /metrics (operator + xDS metrics in one registry) and an optional liveness endpoint;
- the Lease campaign (leader.py).

Only while holding the Lease: Kopf with the TrafficPolicy handlers (handlers.py), which run the
control loops and write status (and, with `--webhook-port`, serve the validating webhook and keep
its ValidatingWebhookConfiguration). Losing the Lease stops Kopf and every loop; the next leader
resumes each loop from the state in status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slate.logs import kv
from slate.operator.controller import Controller
from slate.operator.destinationrule import DestinationRulePublisher
from slate.operator.endpoints import ClusterEndpoints, EndpointIndex
from slate.operator.follower import StatusFollower
from slate.operator.handlers import KopfEvents, OperatorMemo, WebhookOptions, build_registry
from slate.operator.istio import istio_or_plain_view
from slate.operator.kube import (
    GROUP,
    PLURAL,
    VERSION,
    KubeRuleStore,
    KubeStatusSink,
    WatchThread,
    api_client,
)
from slate.operator.leader import LeaderElector
from slate.operator.metrics import OperatorMetrics
from slate.operator.seams import LoopFactory, PublisherLike, default_loop_factory
from slate.xds.cli import server_security
from slate.xds.debounce import Debouncer
from slate.xds.defaults import MAX_CONNECTION_AGE_S
from slate.xds.endpoints import EndpointSet
from slate.xds.follower import FollowerCache
from slate.xds.metrics import XdsMetrics
from slate.xds.protocol import Limits
from slate.xds.resources import ClaOptions
from slate.xds.security import HttpsCredentials
from slate.xds.server import XdsServer

log = logging.getLogger("slate.operator")


@dataclass
class OperatorConfig:
    prometheus: str | None
    namespaces: list[str] | None  # None: all namespaces
    kubeconfig: str | None = None
    host: str = "127.0.0.1"
    xds_port: int = 18000
    metrics_port: int | None = None
    liveness: str | None = None  # e.g. http://127.0.0.1:8080/healthz
    cluster: str | None = None
    operator_namespace: str = "slate-system"
    lease_name: str = "slate-operator"
    lease_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0
    identity: str | None = None
    webhook_port: int | None = None
    webhook_host: str = "127.0.0.1"
    webhook_cert: str | None = None
    webhook_key: str | None = None
    istio_tls_metadata: bool = False
    tls_cert: Path | None = None
    """xDS over TLS (with tls_key); tls_client_ca: mTLS; identity_table: SPIFFE ID -> views."""
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    identity_table: Path | None = None
    max_connection_age_s: float = MAX_CONNECTION_AGE_S
    """Seconds before a proxy's xDS connection must reconnect (0 = never; slate/xds/defaults.py)."""
    metrics_tls_cert: Path | None = None
    """/metrics over HTTPS (with metrics_tls_key); metrics_tls_client_ca: client certificates."""
    metrics_tls_key: Path | None = None
    metrics_tls_client_ca: Path | None = None
    loop_factory: LoopFactory | None = None
    ready_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def self_signed(host: str, workdir: Path) -> tuple[str, str]:
    """A self-signed serving certificate for the webhook (openssl), valid for `host`."""
    cert, key = workdir / "webhook.crt", workdir / "webhook.key"
    san = f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=slate-operator-webhook",
            "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


class Operator:
    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        self.metrics = OperatorMetrics()
        self.xds_metrics = XdsMetrics(self.metrics.registry)
        self.api = api_client(cfg.kubeconfig)
        self.cache = FollowerCache(
            EndpointSet({}), ClaOptions(istio_tls_metadata=cfg.istio_tls_metadata), self.xds_metrics
        )
        # endpoints only: routing reaches a FollowerCache from status
        self.debouncer = Debouncer(self.cache, quiet_s=0.05, max_delay_s=0.5)
        self.index = EndpointIndex(self.debouncer.set_cluster_endpoints, self.metrics)
        self.follower = StatusFollower(
            self.cache, on_routed=self.index.set_routed, on_applied=self._served
        )
        credentials, authorizer = server_security(
            self.xds_metrics,
            tls_cert=cfg.tls_cert,
            tls_key=cfg.tls_key,
            tls_client_ca=cfg.tls_client_ca,
            identity_table=cfg.identity_table,
        )
        self.server = XdsServer(
            self.cache,
            node_mapper=istio_or_plain_view,
            metrics=self.xds_metrics,
            credentials=credentials,
            authorizer=authorizer,
            limits=Limits(max_connection_age_s=cfg.max_connection_age_s),
        )
        self.kopf_task: asyncio.Task[None] | None = None
        self.kopf_stop: asyncio.Event | None = None
        self.xds_port = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="slate-operator-")
        self._watches: list[WatchThread] = []
        self._stop: asyncio.Event | None = None
        self._signals_task: asyncio.Task[None] | None = None

    def _own_signals(self) -> None:
        """SIGINT/SIGTERM stop this replica (Kopf installs its own handlers when it starts and
        removes them when it stops; a replica outlives many Kopf runs, so it takes them back)."""
        if self._stop is None:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop.set)

    def _served(self) -> None:
        self.metrics.served_policies.set(len(self.follower.served))

    # ---- leader-only: Kopf -------------------------------------------------------------------

    def _connection(self) -> Any:
        import kopf

        c = self.api.configuration
        token = (c.api_key or {}).get("authorization") or (c.api_key or {}).get("BearerToken")
        if token and token.lower().startswith("bearer "):
            token = token[7:]
        return kopf.ConnectionInfo(
            server=c.host,
            ca_path=c.ssl_ca_cert,
            insecure=not c.verify_ssl,
            token=token or None,
            certificate_path=c.cert_file,
            private_key_path=c.key_file,
            default_namespace=None,
        )

    def _publishers(self, policy: Any, uid: str | None) -> list[PublisherLike]:
        if policy.output == "destinationRule":
            return [DestinationRulePublisher(KubeRuleStore(self.api), policy, uid)]
        return []  # xds: the status is the publication (every replica follows it)

    async def start_leading(self) -> None:
        import kopf

        cfg = self.cfg
        factory = cfg.loop_factory or default_loop_factory(cfg.prometheus)
        controller = Controller(
            factory,
            KubeStatusSink(self.api),
            KopfEvents(),
            self._publishers,
            self.metrics,
            run_tasks=True,
        )
        webhook = None
        if cfg.webhook_port is not None:
            cert, key = cfg.webhook_cert, cfg.webhook_key
            if not cert or not key:
                cert, key = self_signed(cfg.webhook_host, Path(self._tmp.name))
            webhook = WebhookOptions(cfg.webhook_host, cfg.webhook_port, cert, key)
        memo = OperatorMemo(
            controller,
            connection=self._connection(),
            webhook=webhook,
            rules=KubeRuleStore(self.api),
        )
        self.kopf_stop = asyncio.Event()
        ready = asyncio.Event()
        kwargs: dict[str, Any] = (
            {"clusterwide": True} if cfg.namespaces is None else {"namespaces": cfg.namespaces}
        )
        self.kopf_task = asyncio.create_task(
            kopf.operator(
                registry=build_registry(webhook=webhook is not None),
                standalone=True,
                memo=memo,
                stop_flag=self.kopf_stop,
                ready_flag=ready,
                **kwargs,
            ),
            name="kopf",
        )

        async def take_signals_back() -> None:
            await ready.wait()
            self._own_signals()

        self._signals_task = asyncio.create_task(take_signals_back())

    async def stop_leading(self) -> None:
        if self.kopf_stop is not None:
            self.kopf_stop.set()
        if self.kopf_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.kopf_task, 30)
        self.kopf_task = None
        self.kopf_stop = None
        self._own_signals()

    # ---- always -------------------------------------------------------------------------------

    def _watch_policies(self, loop: asyncio.AbstractEventLoop) -> None:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)

        def failed(_why: str) -> None:
            self.metrics.watch_errors.labels("trafficpolicies", "local").inc()

        if self.cfg.namespaces is None:

            def list_all(**kw: Any) -> Any:
                return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)

            list_all.__doc__ = custom.list_cluster_custom_object.__doc__
            self._watches.append(
                WatchThread("policies", list_all, {}, self.follower.handle, loop, self.api, failed)
            )
        else:
            for ns in self.cfg.namespaces:

                def list_ns(namespace: str, **kw: Any) -> Any:
                    return custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, **kw
                    )

                list_ns.__doc__ = custom.list_namespaced_custom_object.__doc__
                self._watches.append(
                    WatchThread(
                        f"policies-{ns}",
                        list_ns,
                        {"namespace": ns},
                        _namespaced(self.follower, ns),
                        loop,
                        self.api,
                        failed,
                    )
                )
        for w in self._watches:
            w.start()

    async def run(self, stop: asyncio.Event) -> int:
        cfg = self.cfg
        self._stop = stop
        self._own_signals()
        loop = asyncio.get_running_loop()
        self.xds_port = await self.server.start(f"{cfg.host}:{cfg.xds_port}")
        http = None
        ready = f"slate operator: xds on {cfg.host}:{self.xds_port}"
        if cfg.metrics_port is not None:
            tls = None
            if cfg.metrics_tls_cert is not None and cfg.metrics_tls_key is not None:
                tls = HttpsCredentials(
                    cfg.metrics_tls_cert,
                    cfg.metrics_tls_key,
                    cfg.metrics_tls_client_ca,
                    metrics=self.xds_metrics,
                )
            http, _t = self.xds_metrics.serve_http(cfg.metrics_port, cfg.host, tls=tls)
            ready += f" metrics on {cfg.host}:{http.server_port}"
        liveness = await _serve_liveness(cfg.liveness) if cfg.liveness else None
        debounce = asyncio.create_task(self.debouncer.run(), name="debounce")
        self._watch_policies(loop)
        endpoints = ClusterEndpoints(
            self.index,
            self.api,
            cfg.cluster,
            cfg.namespaces,
            cfg.operator_namespace,
            self.metrics,
        )
        endpoints.start()
        elector = LeaderElector(
            self.api,
            cfg.operator_namespace,
            cfg.lease_name,
            cfg.identity,
            cfg.lease_s,
            cfg.renew_deadline_s,
            cfg.retry_s,
            self.metrics,
        )
        print(ready, flush=True)
        if cfg.ready_file:
            Path(cfg.ready_file).write_text(f"{self.xds_port}\n")
        log.info("%s", kv("started", identity=elector.identity, xds_port=self.xds_port))
        try:
            await elector.run(self.start_leading, self.stop_leading, stop)
        finally:
            for w in self._watches:
                w.stop()
            endpoints.stop()
            debounce.cancel()
            # Kopf cancels the tasks it finds still running when it stops (stream handlers
            # included); what is left of the gRPC server may then raise CancelledError here.
            with contextlib.suppress(asyncio.CancelledError):
                await self.server.stop(grace=1.0)
            if http is not None:
                http.shutdown()
            if liveness is not None:
                await liveness.cleanup()
            self._tmp.cleanup()
        return 0


def _namespaced(follower: StatusFollower, ns: str) -> Any:
    def handle(kind: str, objs: list[dict[str, Any]]) -> None:
        if kind == "SYNC":
            # a SYNC of one namespace must not forget the others
            for key in [k for k in follower._known if k[0] == ns]:
                if key not in {(ns, (o.get("metadata") or {}).get("name")) for o in objs}:
                    follower.handle("DELETED", [{"metadata": {"namespace": ns, "name": key[1]}}])
            follower.handle("ADDED", objs)
        else:
            follower.handle(kind, objs)

    return handle


async def _serve_liveness(url: str) -> Any:
    """GET <path> answers 200 while the event loop runs (the process is alive and responsive)."""
    from urllib.parse import urlparse

    from aiohttp import web

    u = urlparse(url)
    app = web.Application()

    async def ok(_req: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get(u.path or "/healthz", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, u.hostname or "127.0.0.1", u.port or 8080)
    await site.start()
    return runner


def run(cfg: OperatorConfig) -> int:
    async def main() -> int:
        return await Operator(cfg).run(asyncio.Event())

    return asyncio.run(main())
