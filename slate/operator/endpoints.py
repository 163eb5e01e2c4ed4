"""Endpoints for the xDS views, from the Kubernetes API of every member cluster.

- the local cluster (the operator's own API server, named by `--cluster`), and
- remote clusters, each reached through a kubeconfig Secret labelled `slate.dev/cluster: NAME` in
  the operator's namespace (like Istio's remote secrets); the Secrets are watched, so a cluster
  joins, changes credentials or leaves without a restart.

Each cluster's EndpointSlices are listed and watched (`discovery.k8s.io/v1`, or `v1beta1` where the
server has no v1, as Kubernetes 1.20 does). Only the services some TrafficPolicy routes count, in
that policy's namespace; a slice's ready addresses with the port matching the policy's service port
(or the slice's only port) become that service's endpoints in that cluster. Changes go to the
xDS `Debouncer` per (service, cluster), so churn from N clusters is merged before views rebuild.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from slate.logs import kv
from slate.operator.follower import Routed
from slate.operator.kube import WatchThread, api_client
from slate.operator.metrics import OperatorMetrics
from slate.xds.endpoints import Endpoint, Endpoints

log = logging.getLogger("slate.operator.endpoints")

CLUSTER_LABEL = "slate.dev/cluster"
SERVICE_LABEL = "kubernetes.io/service-name"

Sink = Callable[[str, str, Endpoints | None], None]
"""(service, cluster, endpoints or None when the service has none there)."""


def slice_endpoints(slice_: Mapping[str, Any], port: int) -> list[Endpoint]:
    """Ready IP endpoints of one EndpointSlice (v1 or v1beta1 shape) at the chosen port."""
    if slice_.get("addressType") not in (None, "IPv4", "IPv6"):
        return []
    ports = [p for p in slice_.get("ports") or [] if isinstance(p, Mapping)]
    chosen = next((p.get("port") for p in ports if p.get("port") == port), None)
    if chosen is None and ports:
        chosen = ports[0].get("port")
    if not isinstance(chosen, int):
        return []
    out = []
    for ep in slice_.get("endpoints") or []:
        if not isinstance(ep, Mapping):
            continue
        if (ep.get("conditions") or {}).get("ready") is False:
            continue
        for addr in ep.get("addresses") or []:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            out.append(Endpoint(str(ip), chosen))
    return out


RETIRED_LIMIT = 10_000
"""Services kept on default routing after their policy went (oldest dropped past this many)."""


class EndpointIndex:
    """EndpointSlices of all clusters -> endpoints per (service, cluster) of routed services.

    A service that no policy routes any more is *retired*, not dropped: its endpoints stay served
    (with no routes, the xDS views give it slate's default routing, local first / nearest), so
    proxies that take the service's endpoints from slate neither keep the deleted policy's
    weights nor lose the endpoints. A policy routing it again takes it back."""

    def __init__(self, sink: Sink, metrics: OperatorMetrics | None = None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.routed: Routed = {}
        self._owner: dict[str, tuple[str, int]] = {}  # service -> (namespace, port) routing it
        self._retired: dict[str, tuple[str, int]] = {}  # no longer routed: default routing
        self._slices: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._sent: dict[tuple[str, str], Endpoints | None] = {}

    @property
    def retired(self) -> frozenset[str]:
        return frozenset(self._retired)

    def set_routed(self, routed: Routed) -> None:
        self.routed = routed
        owner: dict[str, tuple[str, int]] = {}
        for ns in sorted(routed):
            for svc, port in routed[ns].items():
                if svc in owner and owner[svc][0] != ns:
                    log.warning(
                        "%s",
                        kv("service_name_clash", service=svc, used=owner[svc][0], ignored=ns),
                    )
                    continue
                owner[svc] = (ns, port)
        for svc, was in self._owner.items():
            if svc not in owner:
                self._retired.pop(svc, None)
                self._retired[svc] = was
                log.info("%s", kv("service_retired", service=svc, namespace=was[0]))
        for svc in owner:
            self._retired.pop(svc, None)
        while len(self._retired) > RETIRED_LIMIT:
            self._retired.pop(next(iter(self._retired)))
        self._owner = owner
        self._recompute_all()

    def handle(self, cluster: str, kind: str, objs: list[dict[str, Any]]) -> None:
        slices = self._slices.setdefault(cluster, {})
        if kind == "SYNC":
            slices.clear()
        for o in objs:
            meta = o.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            if kind == "DELETED":
                slices.pop(key, None)
            else:
                slices[key] = o
        self._recompute_cluster(cluster)

    def drop_cluster(self, cluster: str) -> None:
        self._slices.pop(cluster, None)
        self._recompute_cluster(cluster)

    def clusters(self) -> list[str]:
        return sorted(self._slices)

    def _recompute_all(self) -> None:
        for cluster in set(self._slices) | {c for _, c in self._sent}:
            self._recompute_cluster(cluster)

    def _recompute_cluster(self, cluster: str) -> None:
        serving = {**self._retired, **self._owner}
        found: dict[str, list[Endpoint]] = {}
        for (ns, _name), s in (self._slices.get(cluster) or {}).items():
            svc = ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_LABEL)
            if not isinstance(svc, str):
                continue
            got = serving.get(svc)
            if got is None or got[0] != ns:
                continue
            found.setdefault(svc, []).extend(slice_endpoints(s, got[1]))
        services = set(found) | {s for s, c in self._sent if c == cluster}
        for svc in sorted(services):
            eps = tuple(sorted(set(found.get(svc, [])))) or None
            if svc not in serving:
                eps = None
            if self._sent.get((svc, cluster), ()) == eps and (svc, cluster) in self._sent:
                continue
            self._sent[(svc, cluster)] = eps
            if eps is None:
                self._sent.pop((svc, cluster), None)
            self.sink(svc, cluster, eps)
            if self.metrics is not None:
                self.metrics.endpoints.labels(svc, cluster).set(len(eps or ()))


def _slice_lister(api: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """list functions (all namespaces, one namespace) for EndpointSlices at the version the
    server has: discovery.k8s.io/v1, else v1beta1 (Kubernetes < 1.21)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    versions: list[str] = []

    def version() -> str:
        if not versions:
            groups = client.ApisApi(api).get_api_versions(_request_timeout=15)
            have = {
                v.version for g in groups.groups if g.name == "discovery.k8s.io" for v in g.versions
            }
            versions.append("v1" if "v1" in have else "v1beta1")
        return versions[0]

    def list_all(**kw: Any) -> Any:
        return custom.list_cluster_custom_object(
            "discovery.k8s.io", version(), "endpointslices", **kw
        )

    def list_ns(namespace: str, **kw: Any) -> Any:
        return custom.list_namespaced_custom_object(
            "discovery.k8s.io", version(), namespace, "endpointslices", **kw
        )

    # kubernetes.watch reads the return type from the docstring: these return plain dicts.
    list_all.__doc__ = custom.list_cluster_custom_object.__doc__
    list_ns.__doc__ = custom.list_namespaced_custom_object.__doc__
    return list_all, list_ns


class ClusterEndpoints:
    """Watches EndpointSlices in the local cluster and every remote one (from Secrets)."""

    def __init__(
        self,
        index: EndpointIndex,
        local_api: Any,
        local_cluster: str | None,
        namespaces: list[str] | None,
        secrets_namespace: str,
        metrics: OperatorMetrics,
    ) -> None:
        self.index = index
        self.local_api = local_api
        self.local_cluster = local_cluster
        self.namespaces = namespaces
        self.secrets_namespace = secrets_namespace
        self.metrics = metrics
        self._watches: dict[str, list[WatchThread]] = {}
        self._remote: dict[str, tuple[str, str]] = {}  # secret name -> (cluster, config hash)
        self._secrets: WatchThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.local_cluster:
            self._watch_cluster(self.local_cluster, self.local_api)
        from kubernetes import client

        core = client.CoreV1Api(self.local_api)
        self._secrets = WatchThread(
            "secrets",
            core.list_namespaced_secret,
            {"namespace": self.secrets_namespace, "label_selector": CLUSTER_LABEL},
            self._on_secrets,
            self._loop,
            self.local_api,
            on_error=lambda _w: self.metrics.watch_errors.labels("secrets", "local").inc(),
        ).start()

    def stop(self) -> None:
        if self._secrets is not None:
            self._secrets.stop()
        for ws in self._watches.values():
            for w in ws:
                w.stop()
        self._watches.clear()

    def _watch_cluster(self, cluster: str, api: Any) -> None:
        assert self._loop is not None
        list_all, list_ns = _slice_lister(api)

        def emit(kind: str, objs: list[dict[str, Any]]) -> None:
            self.index.handle(cluster, kind, objs)

        def failed(_why: str) -> None:
            self.metrics.watch_errors.labels("endpointslices", cluster).inc()

        if self.namespaces is None:
            watches = [
                WatchThread(f"slices-{cluster}", list_all, {}, emit, self._loop, api, failed)
            ]
        else:
            # one namespace per watch: each SYNC replaces only its own namespace's slices
            watches = []
            for ns in self.namespaces:
                watches.append(
                    WatchThread(
                        f"slices-{cluster}-{ns}",
                        list_ns,
                        {"namespace": ns},
                        _only_namespace(emit, self.index, cluster, ns),
                        self._loop,
                        api,
                        failed,
                    )
                )
        self._watches[cluster] = [w.start() for w in watches]
        log.info("%s", kv("watching_cluster", cluster=cluster))

    def _unwatch_cluster(self, cluster: str) -> None:
        for w in self._watches.pop(cluster, []):
            w.stop()
        self.index.drop_cluster(cluster)
        log.info("%s", kv("cluster_left", cluster=cluster))

    def _on_secrets(self, kind: str, objs: list[dict[str, Any]]) -> None:
        if kind == "SYNC":
            present = {(o.get("metadata") or {}).get("name") for o in objs}
            for name in list(self._remote):
                if name not in present:
                    self._drop_secret(name)
        for o in objs:
            name = str((o.get("metadata") or {}).get("name"))
            if kind == "DELETED":
                self._drop_secret(name)
                continue
            cluster = ((o.get("metadata") or {}).get("labels") or {}).get(CLUSTER_LABEL)
            config = _kubeconfig_of(o)
            if not cluster or config is None:
                log.warning("%s", kv("bad_cluster_secret", secret=name))
                continue
            digest = hashlib.sha256(config.encode()).hexdigest()
            if self._remote.get(name) == (cluster, digest):
                continue
            if name in self._remote:
                self._drop_secret(name)
            try:
                api = api_client(config_dict=yaml.safe_load(config))
            except Exception as e:
                log.warning("%s", kv("bad_kubeconfig", secret=name, error=str(e)[:200]))
                continue
            self._remote[name] = (cluster, digest)
            self._watch_cluster(cluster, api)
        self.metrics.remote_clusters.set(len(self._remote))

    def _drop_secret(self, name: str) -> None:
        got = self._remote.pop(name, None)
        if got is not None:
            self._unwatch_cluster(got[0])
        self.metrics.remote_clusters.set(len(self._remote))


def _only_namespace(
    emit: Callable[[str, list[dict[str, Any]]], None], index: EndpointIndex, cluster: str, ns: str
) -> Callable[[str, list[dict[str, Any]]], None]:
    def handle(kind: str, objs: list[dict[str, Any]]) -> None:
        if kind != "SYNC":
            emit(kind, objs)
            return
        # replace this namespace's slices only
        slices = index._slices.setdefault(cluster, {})
        for key in [k for k in slices if k[0] == ns]:
            del slices[key]
        emit("ADDED", objs)

    return handle


def _kubeconfig_of(secret: Mapping[str, Any]) -> str | None:
    data = secret.get("data") or {}
    if not isinstance(data, Mapping) or not data:
        return None
    raw = data.get("kubeconfig") or next(iter(data.values()))
    try:
        return base64.b64decode(raw).decode()
    except (ValueError, TypeError):
        return None
