"""Where each service's endpoints live: the `EndpointSource` interface and a static YAML source.

An `EndpointSet` says, per service, which `host:port` endpoints it has in each cluster (and,
optionally, the RTT between clusters, used to pick the nearest cluster for unrouted calls). The xDS
cache takes whole `EndpointSet` values; a source produces them: `StaticEndpointSource` reads
ENDPOINTS.yaml and re-reads it when it changes; a Kubernetes EndpointSlice source will be another
implementation of the same protocol.

ENDPOINTS.yaml:

    services:
      productcatalog:
        clusters:
          us-west: ["10.0.1.5:8080", "10.0.1.6:8080"]
          us-east: ["10.1.1.5:8080"]
        endpoints:               # optional: endpoint classes, for the routes served by RDS
          list: {path_prefix: /hipstershop.ProductCatalogService/ListProducts}
    rtt_ms:                      # optional, as in scenarios: upper triangle is enough
      us-west: {us-east: 62}

Hosts must be IP literals (`[::1]:80` for IPv6): Envoy does not resolve names in EDS. Numbers and
quoted values in errors follow the scenario parser (slate.model.errors), so a bad field reads the
same in every file slate takes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from slate.model.errors import Bounds, InputError, bounded_number, quote
from slate.model.files import load_document
from slate.xds.filewatch import file_signature, load_safely, watch_file

RTT_MS_BOUNDS = Bounds(hi=1e5)
"""RTTs as in scenario files (docs/scenario-format.md, Limits): 0, or 1e-6 ms up to 100 s."""


@dataclass(frozen=True, order=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


Endpoints = tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class RequestMatch:
    """How requests of one endpoint class are recognised: a path prefix and/or an HTTP method."""

    path_prefix: str | None = None
    method: str | None = None


@dataclass(frozen=True)
class EndpointSet:
    """Endpoints per service per cluster, plus optional inter-cluster RTTs.

    Values are not validated here (the parsers validate user input), so tests can build sets that
    Envoy will reject.
    """

    services: Mapping[str, Mapping[str, Endpoints]]
    rtt_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)
    matches: Mapping[str, Mapping[str, RequestMatch]] = field(default_factory=dict)
    """Per service, its endpoint classes and how their requests are recognised (for the routes
    slate serves to proxyless gRPC clients: RDS); optional."""

    def __post_init__(self) -> None:
        frozen = {s: MappingProxyType(dict(by_cluster)) for s, by_cluster in self.services.items()}
        object.__setattr__(self, "services", MappingProxyType(frozen))
        object.__setattr__(self, "rtt_ms", MappingProxyType(dict(self.rtt_ms)))
        m = {s: MappingProxyType(dict(by_ep)) for s, by_ep in self.matches.items()}
        object.__setattr__(self, "matches", MappingProxyType(m))

    def clusters_of(self, service: str) -> Mapping[str, Endpoints] | None:
        """The service's endpoints by cluster (empty clusters included), or None if unknown."""
        return self.services.get(service)

    def rtt(self, a: str, b: str) -> float | None:
        """RTT between two clusters in ms: 0 within a cluster, None when not given."""
        if a == b:
            return 0.0
        got = self.rtt_ms.get((a, b))
        return got if got is not None else self.rtt_ms.get((b, a))


def parse_endpoint(text: Any, path: str) -> Endpoint:
    """`"10.0.0.1:8080"` or `"[fd00::1]:8080"` -> Endpoint; InputError naming `path` otherwise."""
    if not isinstance(text, str):
        raise InputError(path, f"must be a 'host:port' string (got {quote(text)})")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise InputError(path, f"must be 'host:port' (got {quote(text)})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise InputError(
            path, f"host must be an IP address (EDS does not resolve names; got {quote(host)})"
        ) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InputError(path, f"port must be an integer 1-65535 (got {quote(port_text)})")
    return Endpoint(str(ip), int(port_text))


def endpoints_from_data(data: Any) -> EndpointSet:
    """Parse the ENDPOINTS.yaml document; raise InputError naming the bad field."""
    if not isinstance(data, dict):
        raise InputError("", "an endpoints file must be a mapping with a 'services' key")
    services_raw = data.get("services")
    if not isinstance(services_raw, dict):
        raise InputError("services", "is required and must be a mapping of service names")
    services: dict[str, dict[str, Endpoints]] = {}
    matches: dict[str, dict[str, RequestMatch]] = {}
    for name, svc in services_raw.items():
        spath = f"services.{name}"
        if not isinstance(name, str) or not name or "." in name:
            raise InputError(spath, "service names must be non-empty strings without '.'")
        if not isinstance(svc, dict) or not isinstance(svc.get("clusters"), dict):
            raise InputError(f"{spath}.clusters", "is required and must be a mapping")
        by_cluster: dict[str, Endpoints] = {}
        for cluster, addrs in svc["clusters"].items():
            cpath = f"{spath}.clusters.{cluster}"
            if not isinstance(cluster, str) or not cluster:
                raise InputError(cpath, "cluster names must be non-empty strings")
            if addrs is None:
                addrs = []
            if not isinstance(addrs, list):
                raise InputError(cpath, "must be a list of 'host:port' strings")
            eps = [parse_endpoint(a, f"{cpath}[{i}]") for i, a in enumerate(addrs)]
            if len(set(eps)) != len(eps):
                raise InputError(cpath, "lists an endpoint twice")
            by_cluster[cluster] = tuple(eps)
        services[name] = by_cluster
        if svc.get("endpoints") is not None:
            matches[name] = _parse_matches(svc["endpoints"], f"{spath}.endpoints")
    return EndpointSet(services, _parse_rtt(data.get("rtt_ms")), matches)


def _parse_matches(raw: Any, path: str) -> dict[str, RequestMatch]:
    if not isinstance(raw, dict):
        raise InputError(path, "must be a mapping {endpoint: {path_prefix: /..., method: GET}}")
    out: dict[str, RequestMatch] = {}
    for ep, spec in raw.items():
        epath = f"{path}.{ep}"
        if not isinstance(ep, str) or not ep or "." in ep:
            raise InputError(epath, "endpoint names must be non-empty strings without '.'")
        if not isinstance(spec, dict) or not set(spec) <= {"path_prefix", "method"}:
            raise InputError(epath, "must be a mapping with path_prefix and/or method")
        prefix, method = spec.get("path_prefix"), spec.get("method")
        if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
            raise InputError(f"{epath}.path_prefix", f"must start with '/' (got {quote(prefix)})")
        if method is not None and (not isinstance(method, str) or not method.isalpha()):
            raise InputError(f"{epath}.method", f"must be an HTTP method (got {quote(method)})")
        if prefix is None and method is None:
            raise InputError(epath, "needs a path_prefix or a method")
        out[ep] = RequestMatch(prefix, method.upper() if method else None)
    return out


def _parse_rtt(raw: Any) -> dict[tuple[str, str], float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError("rtt_ms", "must be a mapping {cluster: {cluster: ms}}")
    out: dict[tuple[str, str], float] = {}
    for a, row in raw.items():
        if not isinstance(row, dict):
            raise InputError(f"rtt_ms.{a}", "must be a mapping {cluster: ms}")
        for b, ms in row.items():
            out[(str(a), str(b))] = bounded_number(ms, f"rtt_ms.{a}.{b}", RTT_MS_BOUNDS)
    return out


def load_endpoints(path: str | Path) -> EndpointSet:
    """Read and validate an ENDPOINTS.yaml file."""
    return load_document(path, "endpoints file", "yaml", endpoints_from_data)


class EndpointSource(Protocol):
    """Produces the endpoints the xDS cache serves."""

    def current(self) -> EndpointSet:
        """The endpoints now (always a valid set)."""
        ...

    def updates(self) -> AsyncIterator[EndpointSet]:
        """Each new valid endpoint set, as it appears; bad updates are logged and skipped."""
        ...


class StaticEndpointSource:
    """Endpoints from an ENDPOINTS.yaml file, re-read when the file changes.

    The constructor raises InputError if the file is bad (whatever the failure), so a server never
    starts without endpoints; a bad file later is logged and the previous endpoints stay in force.
    """

    def __init__(
        self,
        path: str | Path,
        poll_interval: float = 1.0,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.on_reject = on_reject
        self._signature = file_signature(self.path)
        self._current = load_safely(load_endpoints, self.path)

    def current(self) -> EndpointSet:
        return self._current

    async def updates(self) -> AsyncIterator[EndpointSet]:
        async for eps in watch_file(
            self.path, load_endpoints, self.poll_interval, self._signature, self.on_reject
        ):
            self._current = eps
            yield eps
