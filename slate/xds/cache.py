"""The xDS cache: views, per-resource versions, serialised bytes, and who to tell about changes.

`XdsCache` holds the current routing and endpoints. A resource is identified by (view, name) and
built lazily, the first time a stream asks for it; all streams of a view share the one `Resource`
object, whose CLA is serialised once (and wrapped once as a SotW `Any` and a delta `Resource`).
Views that come out with the same locality plan for a name share the object too.

Updates go through `update()` (or `set_routing()` / `set_endpoints()`): every held resource is
recomputed, cheaply (the locality plan is compared before anything is serialised), and only the
watchers of resources whose content changed are notified, with the names that changed. Versions are
content hashes, stable across restarts, so a proxy reconnecting with the versions it has (delta)
gets nothing it already has.

Everything here runs on the server's event loop thread; the cache is not thread-safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from envoy.config.endpoint.v3 import endpoint_pb2

from slate.model.routing import INGRESS, Routing
from slate.xds import wire
from slate.xds.endpoints import Endpoints, EndpointSet
from slate.xds.metrics import XdsMetrics
from slate.xds.resources import (
    CLA_TYPE_URL,
    ClaOptions,
    ClaWriter,
    LocalityPlan,
    RouteIndex,
    destination_weights,
    locality_plan,
)
from slate.xds.subscribers import Subscribers
from slate.xds.views import ViewKey, local_name

_BODY_MEMO_LIMIT = 20_000
_BODY_MEMO_BYTES = 64 << 20


@dataclass(frozen=True, slots=True, eq=False)
class Resource:
    """One ClusterLoadAssignment as served to every stream of a view, serialised once."""

    name: str
    version: str
    """Content hash of the serialised CLA."""
    generation: int
    """Cache generation in which this content appeared."""
    plan: LocalityPlan
    endpoints: Mapping[str, Endpoints]
    cla: bytes = field(repr=False)
    any_bytes: bytes = field(repr=False)
    """The CLA wrapped in `google.protobuf.Any` (SotW `resources` element)."""
    delta_bytes: bytes = field(repr=False)
    """The CLA wrapped in `discovery.v3.Resource` with name and version (delta element)."""

    @staticmethod
    def of(
        name: str,
        cla: bytes,
        generation: int,
        plan: LocalityPlan,
        endpoints: Mapping[str, Endpoints],
        type_url: str = CLA_TYPE_URL,
    ) -> Resource:
        version = hashlib.sha256(cla).hexdigest()[:16]
        any_bytes = wire.any_message(type_url, cla)
        return Resource(
            name,
            version,
            generation,
            plan,
            endpoints,
            cla,
            any_bytes,
            wire.delta_resource(name, version, any_bytes),
        )

    def message(self) -> endpoint_pb2.ClusterLoadAssignment:
        """The CLA as a message (for inspection; serving uses the bytes)."""
        return endpoint_pb2.ClusterLoadAssignment.FromString(self.cla)


class Watcher(Protocol):
    """A stream that wants to hear which of its resources changed."""

    def resources_changed(self, names: Sequence[str], started: float) -> None:
        """`names` of the watched view changed in the update that began at monotonic `started`."""
        ...


class ServicesWatcher(Protocol):
    """A stream holding names that do not exist (yet): told when the set of services changes."""

    def services_changed(self, started: float) -> None: ...


class ConfigCache(Protocol):
    """What the xDS server reads: resources per (view, name), and who to tell when they change.

    `XdsCache` is the writable implementation (`WritableCache`); `FollowerCache` (follower.py) is
    a read-only one fed from the routes a leader wrote into policy status. Both run on the
    server's event loop.
    """

    @property
    def routing(self) -> Routing: ...

    @property
    def endpoints(self) -> EndpointSet: ...

    def resource(self, view: ViewKey, name: str) -> Resource | None: ...

    def names(self, view: ViewKey) -> frozenset[str]: ...

    def knows(self, name: str) -> bool: ...

    def knows_view(self, view: ViewKey) -> bool: ...

    def empty_resource(self, name: str) -> Resource: ...

    def sotw_response(
        self, resources: Sequence[Resource]
    ) -> tuple[bytes, str, Mapping[str, str]]: ...

    def delta_body(self, resources: Sequence[Resource], removed: Sequence[str]) -> bytes: ...

    def watch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None: ...

    def unwatch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None: ...

    def watch_all(self, watcher: Watcher, view: ViewKey) -> None: ...

    def unwatch_all(self, watcher: Watcher, view: ViewKey) -> None: ...

    def watch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None: ...

    def unwatch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None: ...


class WritableCache(ConfigCache, Protocol):
    """A cache the control loop (leader) writes to."""

    def set_routing(self, routing: Routing) -> UpdateResult: ...

    def set_endpoints(self, endpoints: EndpointSet) -> UpdateResult: ...

    def update(
        self, routing: Routing | None = None, endpoints: EndpointSet | None = None
    ) -> UpdateResult: ...


@dataclass(frozen=True)
class UpdateResult:
    generation: int
    changed: int
    """(view, name) resources whose content changed."""
    notified: int
    """Watchers (streams) told about a change."""
    seconds: float


class XdsCache:
    def __init__(
        self,
        routing: Routing,
        endpoints: EndpointSet,
        options: ClaOptions | None = None,
        metrics: XdsMetrics | None = None,
    ) -> None:
        self.options = options or ClaOptions()
        self._writer = ClaWriter(self.options)
        self.metrics = metrics
        self.generation = 1
        self._index = RouteIndex(routing)
        self._endpoints = endpoints
        self._resources: dict[tuple[ViewKey, str], Resource | None] = {}
        self._watchers: Subscribers[tuple[ViewKey, str], Watcher] = Subscribers()
        self._wildcard: Subscribers[ViewKey, Watcher] = Subscribers()
        self._waiting: set[ServicesWatcher] = set()
        self.followers: list[Callable[[float], int]] = []
        """Called after each update with its start time (the derived LDS/RDS/CDS caches); each
        returns how many watchers it notified."""
        """Watchers with names whose service is unknown: told when the services change."""
        self._names: dict[ViewKey, frozenset[str]] = {}
        self._bodies: dict[tuple[object, ...], tuple[bytes, str, Mapping[str, str]]] = {}
        self._body_bytes = 0
        self._known_clusters: frozenset[str] = frozenset()
        self._clusters_of: EndpointSet | None = None
        self._empty: dict[str, Resource] = {}
        # Views whose plan for a name is the same share one Resource (built once, not per view).
        self._interned: dict[tuple[str, LocalityPlan], Resource] = {}
        if metrics is not None:
            metrics.cache_generation.set(self.generation)

    # ---- reading ---------------------------------------------------------------------------

    @property
    def routing(self) -> Routing:
        return self._index.routing

    @property
    def endpoints(self) -> EndpointSet:
        return self._endpoints

    def resource(self, view: ViewKey, name: str) -> Resource | None:
        """The CLA `name` as seen from `view`, or None if its service has no entry in endpoints."""
        key = (view, name)
        try:
            return self._resources[key]
        except KeyError:
            if not self.knows(name):
                return None  # nothing is built or kept for names that do not exist
            res = self._build(view, name, None)
            self._resources[key] = res
            self._record_version(view, name, res)
            return res

    def knows_view(self, view: ViewKey) -> bool:
        """Whether the view's service and cluster are names slate knows (from the routing or the
        endpoints), as opposed to whatever a client put in its node."""
        eps = self._endpoints
        if self._clusters_of is not eps:
            self._known_clusters = frozenset(c for by in eps.services.values() for c in by)
            self._clusters_of = eps
        index = self._index
        service_ok = (
            view.service == INGRESS or view.service in index.sources or view.service in eps.services
        )
        return service_ok and (
            view.cluster in index.clusters or view.cluster in self._known_clusters
        )

    def knows(self, name: str) -> bool:
        """Whether `name`'s service exists (has an entry in the endpoints)."""
        if name.startswith("xdstp:"):
            name = local_name(name)
        return name.split(".", 1)[0] in self._endpoints.services

    def names(self, view: ViewKey) -> frozenset[str]:
        """What a wildcard subscription from `view` gets: every service with an endpoints entry,
        plus the endpoint classes routed from this view."""
        got = self._names.get(view)
        if got is None:
            services = self._endpoints.services
            routed = {
                to for to in self._index.destinations(view) if to.split(".", 1)[0] in services
            }
            got = frozenset(services) | frozenset(routed)
            self._names[view] = got
        return got

    def empty_resource(self, name: str) -> Resource:
        """A CLA with no endpoints: what SotW serves for a name that does not exist (EDS SotW has
        no removal)."""
        res = self._empty.get(name)
        if res is None:
            cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
            res = Resource.of(name, cla.SerializeToString(), self.generation, (), {})
            self._empty[name] = res
        return res

    def sotw_body(self, resources: Sequence[Resource]) -> tuple[bytes, str]:
        """(DiscoveryResponse bytes without nonce, version_info), shared by identical content.

        `version_info` is a hash of the (name, version) pairs the response carries.
        """
        return self.sotw_response(resources)[:2]

    def sotw_response(self, resources: Sequence[Resource]) -> tuple[bytes, str, Mapping[str, str]]:
        """`sotw_body` plus the name -> version map of what it carries (shared: do not modify).

        Memoised by the identity of the `Resource` objects (a stream's push is a dict lookup on
        a tuple of them); the same content in other objects only costs a rebuild, never a
        different result."""
        key = ("sotw", *resources)
        got = self._bodies.get(key)
        if got is None:
            pairs = ("sotw", *((r.name, r.version) for r in resources))
            digest = hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]
            body = wire.sotw_body(digest, CLA_TYPE_URL, (r.any_bytes for r in resources))
            got = self._remember(key, (body, digest, {r.name: r.version for r in resources}))
        return got

    def delta_body(self, resources: Sequence[Resource], removed: Sequence[str]) -> bytes:
        """DeltaDiscoveryResponse bytes without nonce, shared by identical content."""
        if removed:  # removals are per stream (often names that never existed): not memoised
            return wire.delta_body(CLA_TYPE_URL, (r.delta_bytes for r in resources), removed)
        key = ("delta", tuple(resources))
        got = self._bodies.get(key)
        if got is None:
            body = wire.delta_body(CLA_TYPE_URL, (r.delta_bytes for r in resources), removed)
            got = self._remember(key, (body, "", {}))
        return got[0]

    def _remember(
        self, key: tuple[object, ...], value: tuple[bytes, str, Mapping[str, str]]
    ) -> tuple[bytes, str, Mapping[str, str]]:
        if len(self._bodies) >= _BODY_MEMO_LIMIT or self._body_bytes > _BODY_MEMO_BYTES:
            self._bodies.clear()
            self._body_bytes = 0
        self._bodies[key] = value
        self._body_bytes += len(value[0])
        return value

    # ---- watching --------------------------------------------------------------------------

    def watch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None:
        for name in names:
            self._watchers.add((view, name), watcher)

    def unwatch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None:
        for name in names:
            self._watchers.discard((view, name), watcher)

    def watch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None:
        """Hear (`services_changed`) when the set of services changes."""
        self._waiting.add(watcher)

    def unwatch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None:
        self._waiting.discard(watcher)

    def watch_all(self, watcher: Watcher, view: ViewKey) -> None:
        """Wildcard: hear about every name of the view, including names that appear later."""
        self._wildcard.add(view, watcher)

    def unwatch_all(self, watcher: Watcher, view: ViewKey) -> None:
        self._wildcard.discard(view, watcher)

    # ---- updating --------------------------------------------------------------------------

    def set_routing(self, routing: Routing) -> UpdateResult:
        return self.update(routing=routing)

    def set_endpoints(self, endpoints: EndpointSet) -> UpdateResult:
        return self.update(endpoints=endpoints)

    def update(
        self, routing: Routing | None = None, endpoints: EndpointSet | None = None
    ) -> UpdateResult:
        """Apply new routing and/or endpoints and notify the watchers of what changed."""
        started = time.monotonic()
        if routing is not None:
            self._index = RouteIndex(routing)
        services_changed = False
        if endpoints is not None:
            services_changed = set(endpoints.services) != set(self._endpoints.services)
            self._endpoints = endpoints
        self.generation += 1
        self._bodies.clear()
        self._body_bytes = 0
        self._empty.clear()
        self._interned.clear()

        changed: dict[ViewKey, list[str]] = defaultdict(list)
        for key, old in list(self._resources.items()):
            view, name = key
            if key not in self._watchers and view not in self._wildcard:
                del self._resources[key]  # nobody asks for it any more
                self._forget_version(view, name)
                continue
            new = self._build(view, name, old)
            if new is not old:
                self._resources[key] = new
                self._record_version(view, name, new)
                changed[view].append(name)
        old_names, self._names = self._names, {}
        for view in self._wildcard:
            before = old_names.get(view, frozenset())
            for name in self.names(view).symmetric_difference(before):
                if name not in changed[view]:
                    changed[view].append(name)

        notified = self._notify(changed, started)
        if services_changed:
            for w in list(self._waiting):
                w.services_changed(started)
        for follow in list(self.followers):
            notified += follow(started)
        seconds = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.cache_generation.set(self.generation)
            self.metrics.cache_updates.inc()
            self.metrics.cache_update_seconds.observe(seconds)
            self.metrics.resources.set(len(self._resources))
        return UpdateResult(
            self.generation, sum(len(v) for v in changed.values()), notified, seconds
        )

    def _notify(self, changed: Mapping[ViewKey, Collection[str]], started: float) -> int:
        notified = 0
        for view, names in changed.items():
            if not names:
                continue
            targets: dict[Watcher, list[str]] = defaultdict(list)
            for name in names:
                for w in self._watchers.of((view, name)):
                    targets[w].append(name)
            for w in self._wildcard.of(view):
                targets[w] = list(names)
            for w, ns in targets.items():
                w.resources_changed(ns, started)
            notified += len(targets)
        return notified

    def _build(self, view: ViewKey, name: str, old: Resource | None) -> Resource | None:
        """The resource for (view, name), or `old` itself if its content would not change."""
        plain = local_name(name)  # xdstp://.../cart -> cart, served under the name asked for
        by_cluster = self._endpoints.clusters_of(plain.split(".", 1)[0])
        weights = destination_weights(self._index, self._endpoints, view, plain)
        if by_cluster is None or weights is None:
            return None
        plan = locality_plan(weights, by_cluster, self.options.weight_total)
        if old is not None and old.plan == plan and _same_endpoints(old, by_cluster, plan):
            return old
        res = self._interned.get((name, plan))
        if res is None:
            used = {c: by_cluster[c] for c, _, _ in plan}
            cla = self._writer.cla(name, plan, by_cluster)
            res = Resource.of(name, cla, self.generation, plan, used)
            self._interned[(name, plan)] = res
        if old is not None and old.version == res.version:
            return old
        return res

    def _record_version(self, view: ViewKey, name: str, res: Resource | None) -> None:
        if res is None:
            self._forget_version(view, name)
        elif self.metrics is not None and self._labelled(view, name):
            self.metrics.resource_generation.labels(str(view), name).set(res.generation)

    def _labelled(self, view: ViewKey, name: str) -> bool:
        """Whether (view, name) may be metric label values: both known to slate (a service, or a
        destination routed from the view), never just whatever a client subscribed to."""
        if not self.knows_view(view):
            return False
        return name in self._endpoints.services or name in self._index.destinations(view)

    def _forget_version(self, view: ViewKey, name: str) -> None:
        if self.metrics is not None:
            with contextlib.suppress(KeyError):
                self.metrics.resource_generation.remove(str(view), name)


def _same_endpoints(old: Resource, by_cluster: Mapping[str, Endpoints], plan: LocalityPlan) -> bool:
    return all(old.endpoints.get(c) == by_cluster[c] for c, _, _ in plan)
