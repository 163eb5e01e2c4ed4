"""Caches for the resource types other than ClusterLoadAssignment, derived from an `XdsCache`.

`DerivedCache` serves one type (Listener, RouteConfiguration, Cluster; see config.py for what
they contain) through the same `ConfigCache` interface the streams use for CLAs, built from the
routing and endpoints of the `XdsCache` it follows and rebuilt after each of its updates (only
watchers of resources whose bytes changed are told). `UnservedCache` is a type slate does not
serve: nothing exists, so a client gets an empty answer rather than the end of its stream.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

from slate.model.routing import Routing
from slate.xds import config, wire
from slate.xds.cache import ConfigCache, Resource, ServicesWatcher, Watcher, XdsCache
from slate.xds.endpoints import EndpointSet
from slate.xds.subscribers import Subscribers
from slate.xds.views import ViewKey, service_of

Builder = Callable[[str, EndpointSet], bytes | None]


class DerivedCache:
    """One resource type, built per name (views only differ in their wildcard name sets)."""

    def __init__(
        self,
        type_url: str,
        base: XdsCache,
        build: Builder,
        wildcard: Callable[[ViewKey], frozenset[str]],
        *,
        follow: bool = True,
    ) -> None:
        self.type_url = type_url
        self.base = base
        self._build = build
        self._wildcard_names = wildcard
        self._resources: dict[str, Resource | None] = {}
        self._watchers: Subscribers[str, Watcher] = Subscribers()
        self._wildcard: Subscribers[ViewKey, Watcher] = Subscribers()
        self._names: dict[ViewKey, frozenset[str]] = {}
        if follow:
            base.followers.append(self._base_updated)

    @property
    def routing(self) -> Routing:
        return self.base.routing

    @property
    def endpoints(self) -> EndpointSet:
        return self.base.endpoints

    def _make(self, name: str) -> Resource | None:
        if not self.knows(name):
            return None
        raw = self._build(name, self.base.endpoints)
        if raw is None:
            return None
        return Resource.of(name, raw, 0, (), {}, self.type_url)

    def resource(self, view: ViewKey, name: str) -> Resource | None:
        try:
            return self._resources[name]
        except KeyError:
            res = self._make(name)
            if res is not None:  # nothing kept for names that do not exist
                self._resources[name] = res
            return res

    def names(self, view: ViewKey) -> frozenset[str]:
        got = self._names.get(view)
        if got is None:
            got = self._names[view] = self._wildcard_names(view)
        return got

    def knows(self, name: str) -> bool:
        return self.base.knows(name)

    def knows_view(self, view: ViewKey) -> bool:
        return self.base.knows_view(view)

    def empty_resource(self, name: str) -> Resource:
        raise KeyError(name)  # full-state and RDS SotW remove by omission, never by emptiness

    def sotw_response(self, resources: Sequence[Resource]) -> tuple[bytes, str, Mapping[str, str]]:
        pairs = repr(tuple((r.name, r.version) for r in resources)).encode()
        digest = hashlib.sha256(pairs).hexdigest()[:16]
        body = wire.sotw_body(digest, self.type_url, (r.any_bytes for r in resources))
        return body, digest, {r.name: r.version for r in resources}

    def delta_body(self, resources: Sequence[Resource], removed: Sequence[str]) -> bytes:
        return wire.delta_body(self.type_url, (r.delta_bytes for r in resources), removed)

    def watch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None:
        for name in names:
            self._watchers.add(name, watcher)

    def unwatch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None:
        for name in names:
            if self._watchers.discard(name, watcher):
                self._resources.pop(name, None)

    def watch_all(self, watcher: Watcher, view: ViewKey) -> None:
        self._wildcard.add(view, watcher)

    def unwatch_all(self, watcher: Watcher, view: ViewKey) -> None:
        self._wildcard.discard(view, watcher)

    def watch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None:
        self.base.watch_services(watcher, view)

    def unwatch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None:
        self.base.unwatch_services(watcher, view)

    def _base_updated(self, started: float) -> int:
        changed: set[str] = set()
        for name, old in list(self._resources.items()):
            new = self._make(name)
            if new is None:
                del self._resources[name]
                changed.add(name)
            elif old is None or new.version != old.version:
                self._resources[name] = new
                changed.add(name)
        targets: dict[Watcher, set[str]] = defaultdict(set)
        for name in changed:
            for w in self._watchers.of(name):
                targets[w].add(name)
        old_names, self._names = self._names, {}
        for view, ws in self._wildcard.items():
            names = self.names(view)
            moved = names.symmetric_difference(old_names.get(view, frozenset()))
            touched = moved | (changed & names)
            if touched:
                for w in ws:
                    targets[w] |= touched
        for w, ns in targets.items():
            w.resources_changed(sorted(ns), started)
        return len(targets)


class UnservedCache(DerivedCache):
    """A type slate does not serve: every name is unknown, the wildcard set is empty."""

    def __init__(self, type_url: str, base: ConfigCache) -> None:
        # Only read through the ConfigCache interface (no follower hook is registered).
        super().__init__(
            type_url,
            cast(XdsCache, base),
            lambda _n, _e: None,
            lambda _v: frozenset(),
            follow=False,
        )

    def knows(self, name: str) -> bool:
        return False


def derived_caches(base: XdsCache) -> dict[str, DerivedCache]:
    """The Listener, RouteConfiguration and Cluster caches following `base`."""

    def listener(name: str, eps: EndpointSet) -> bytes:
        return config.listener(name, service_of(name))

    def route(name: str, eps: EndpointSet) -> bytes | None:
        if "." in name.rsplit("/", 1)[-1]:
            return None  # routes are per service; endpoint classes are clusters
        return config.route_configuration(name, service_of(name), eps)

    def cluster(name: str, eps: EndpointSet) -> bytes:
        return config.cluster(name)

    nothing: Callable[[ViewKey], frozenset[str]] = lambda _v: frozenset()  # noqa: E731
    return {
        config.LISTENER_TYPE_URL: DerivedCache(config.LISTENER_TYPE_URL, base, listener, nothing),
        config.ROUTE_TYPE_URL: DerivedCache(config.ROUTE_TYPE_URL, base, route, nothing),
        config.CLUSTER_TYPE_URL: DerivedCache(config.CLUSTER_TYPE_URL, base, cluster, base.names),
    }
