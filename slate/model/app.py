"""The application: services, their endpoints (traffic classes) and the endpoint call DAG."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType


def endpoint_id(service: str, endpoint: str) -> str:
    return f"{service}.{endpoint}"


def split_endpoint_id(eid: str) -> tuple[str, str]:
    service, _, endpoint = eid.partition(".")
    return service, endpoint


@dataclass(frozen=True)
class Call:
    """Calls made while serving ONE request of the calling endpoint."""

    to: str  # destination endpoint id, `service.endpoint`
    per_request: float
    request_kb: float
    response_kb: float


@dataclass(frozen=True)
class Endpoint:
    service: str
    name: str
    service_ms: float  # mean work of one request at one replica
    calls: tuple[Call, ...] = ()

    @property
    def id(self) -> str:
        return endpoint_id(self.service, self.name)


@dataclass(frozen=True)
class Service:
    name: str
    replicas: Mapping[str, int]  # cluster -> replicas; only clusters where it is deployed
    endpoints: tuple[Endpoint, ...]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "replicas", MappingProxyType({c: n for c, n in self.replicas.items() if n > 0})
        )

    @property
    def clusters(self) -> tuple[str, ...]:
        return tuple(self.replicas)


@dataclass(frozen=True)
class App:
    """Services and the endpoint call graph, which must be a DAG (checked by the parser)."""

    services: tuple[Service, ...]
    _by_name: Mapping[str, Service] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", MappingProxyType({s.name: s for s in self.services}))

    def service(self, name: str) -> Service:
        return self._by_name[name]

    def has_service(self, name: str) -> bool:
        return name in self._by_name

    @cached_property
    def endpoints(self) -> Mapping[str, Endpoint]:
        return MappingProxyType({e.id: e for s in self.services for e in s.endpoints})

    def endpoint(self, eid: str) -> Endpoint:
        return self.endpoints[eid]

    def service_of(self, eid: str) -> Service:
        return self._by_name[split_endpoint_id(eid)[0]]

    @cached_property
    def topo_order(self) -> tuple[str, ...]:
        """Endpoint ids, every caller before its callees (Kahn's algorithm, stable)."""
        indeg = {eid: 0 for eid in self.endpoints}
        for e in self.endpoints.values():
            for c in e.calls:
                indeg[c.to] += 1
        ready = [eid for eid, d in indeg.items() if d == 0]
        order: list[str] = []
        while ready:
            eid = ready.pop(0)
            order.append(eid)
            for c in self.endpoints[eid].calls:
                indeg[c.to] -= 1
                if indeg[c.to] == 0:
                    ready.append(c.to)
        if len(order) != len(indeg):
            raise ValueError("the endpoint call graph has a cycle")
        return tuple(order)

    @cached_property
    def service_calls(self) -> Mapping[str, frozenset[str]]:
        """Service -> the services its endpoints call."""
        out: dict[str, set[str]] = {s.name: set() for s in self.services}
        for e in self.endpoints.values():
            for c in e.calls:
                out[e.service].add(split_endpoint_id(c.to)[0])
        return MappingProxyType({k: frozenset(v) for k, v in out.items()})

    @cached_property
    def service_order(self) -> tuple[str, ...]:
        """Services in call order, upstream first.

        A service comes after every service that calls it. The endpoint graph is a DAG, but the
        service graph may still have a cycle (A.x -> B.y -> A.z); such a cycle is broken at the
        service whose first endpoint comes earliest in `topo_order`.
        """
        rank = {eid: i for i, eid in enumerate(self.topo_order)}
        first = {
            s.name: min((rank[e.id] for e in s.endpoints), default=len(rank)) for s in self.services
        }
        callers: dict[str, set[str]] = {s.name: set() for s in self.services}
        for src, dsts in self.service_calls.items():
            for d in dsts:
                if d != src:
                    callers[d].add(src)
        done: list[str] = []
        left = {s.name for s in self.services}
        while left:
            ready = [s for s in left if not (callers[s] & left)]
            pick = min(ready or left, key=lambda s: first[s])
            done.append(pick)
            left.remove(pick)
        return tuple(done)
