"""A read-only xDS cache fed from the routes a leader wrote into TrafficPolicy status.

With several operator replicas, one (the Lease holder) runs the control loops and writes each
policy's `status.routes` (trafficpolicy.md: `{fromService, fromCluster, to, weights: [{cluster,
weight}]}`); every replica serves xDS. A `FollowerCache` serves exactly what status says, so a
proxy may connect to any replica and a leader change moves no traffic: the new leader's first
write is what the followers already serve. (The leader can serve from its own `FollowerCache`
too, fed from the status it writes, so that all replicas are equal.)

Routing only changes through `follow_status()` / `forget()`; there is no `set_routing`. Endpoints
come from each replica's own watches (`set_endpoints`, or a `Debouncer` in front). Everything else
is the wrapped `XdsCache`'s, through the read-only `ConfigCache` interface the server uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from slate.model.errors import InputError
from slate.model.routing import Route, Routing, routing_from_routes
from slate.xds.cache import (
    ConfigCache,
    Resource,
    ServicesWatcher,
    UpdateResult,
    Watcher,
    XdsCache,
)
from slate.xds.endpoints import EndpointSet
from slate.xds.metrics import XdsMetrics
from slate.xds.resources import ClaOptions
from slate.xds.views import ViewKey


def routes_from_status(status: Mapping[str, Any] | None) -> tuple[Route, ...]:
    """The `status.routes` of a TrafficPolicy as Routes; InputError naming the field if bad."""
    if not status:
        return ()
    raw = status.get("routes") or []
    if not isinstance(raw, list):
        raise InputError("status.routes", "must be a list")
    out: list[Route] = []
    for i, r in enumerate(raw):
        path = f"status.routes[{i}]"
        if not isinstance(r, Mapping):
            raise InputError(path, "must be a mapping")
        names = []
        for key in ("fromService", "fromCluster", "to"):
            v = r.get(key)
            if not isinstance(v, str) or not v:
                raise InputError(f"{path}.{key}", f"must be a non-empty string, got {v!r}")
            names.append(v)
        weights: dict[str, float] = {}
        for j, w in enumerate(r.get("weights") or []):
            wpath = f"{path}.weights[{j}]"
            if not isinstance(w, Mapping) or not isinstance(w.get("cluster"), str):
                raise InputError(wpath, "must be {cluster: NAME, weight: NUMBER}")
            value = w.get("weight")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(f"{wpath}.weight", f"must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{wpath}.weight", f"must be finite and >= 0, got {value!r}")
            weights[w["cluster"]] = float(value)
        out.append(Route(names[0], names[1], names[2], weights))
    return tuple(out)


class FollowerCache:
    """Read-only `ConfigCache`: routing from policy status, endpoints from local watches."""

    def __init__(
        self,
        endpoints: EndpointSet,
        options: ClaOptions | None = None,
        metrics: XdsMetrics | None = None,
    ) -> None:
        self._inner = XdsCache(routing_from_routes(()), endpoints, options, metrics)
        self._by_policy: dict[tuple[str, str], tuple[Route, ...]] = {}
        self.metrics = metrics

    # ---- fed from status ----------------------------------------------------------------------

    def follow_status(
        self, namespace: str, name: str, status: Mapping[str, Any] | None
    ) -> UpdateResult | None:
        """Serve the routes in this policy's status (replacing what it had). Returns None when
        they are what is served already; raises InputError (naming the field) if malformed, and
        then keeps serving the previous routes."""
        routes = routes_from_status(status)
        key = (namespace, name)
        if self._by_policy.get(key) == routes:
            return None
        self._by_policy[key] = routes
        return self._inner.update(routing=self._merged())

    def forget(self, namespace: str, name: str) -> UpdateResult | None:
        """The policy is gone: stop serving its routes (its destinations fall back to nearest)."""
        if self._by_policy.pop((namespace, name), None) is None:
            return None
        return self._inner.update(routing=self._merged())

    def set_endpoints(self, endpoints: EndpointSet) -> UpdateResult:
        return self._inner.update(endpoints=endpoints)

    def update(
        self, routing: Routing | None = None, endpoints: EndpointSet | None = None
    ) -> UpdateResult:
        """Endpoints only (for a `Debouncer` in front); routing comes from status."""
        if routing is not None:
            raise TypeError("a FollowerCache takes routing only from policy status")
        return self._inner.update(endpoints=endpoints)

    def _merged(self) -> Routing:
        seen: dict[tuple[str, str, str], Route] = {}
        for key in sorted(self._by_policy):  # conflicts: the operator says which policy wins
            for r in self._by_policy[key]:
                seen.setdefault(r.key, r)
        return routing_from_routes(seen.values())

    # ---- ConfigCache (read-only, delegated) ---------------------------------------------------

    @property
    def base_cache(self) -> XdsCache:
        """The cache behind this one (the server derives its Listener/Route/Cluster caches from
        it; nothing else should write to it)."""
        return self._inner

    @property
    def generation(self) -> int:
        return self._inner.generation

    @property
    def routing(self) -> Routing:
        return self._inner.routing

    @property
    def endpoints(self) -> EndpointSet:
        return self._inner.endpoints

    def resource(self, view: ViewKey, name: str) -> Resource | None:
        return self._inner.resource(view, name)

    def names(self, view: ViewKey) -> frozenset[str]:
        return self._inner.names(view)

    def knows(self, name: str) -> bool:
        return self._inner.knows(name)

    def knows_view(self, view: ViewKey) -> bool:
        return self._inner.knows_view(view)

    def empty_resource(self, name: str) -> Resource:
        return self._inner.empty_resource(name)

    def sotw_response(self, resources: Sequence[Resource]) -> tuple[bytes, str, Mapping[str, str]]:
        return self._inner.sotw_response(resources)

    def delta_body(self, resources: Sequence[Resource], removed: Sequence[str]) -> bytes:
        return self._inner.delta_body(resources, removed)

    def watch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None:
        self._inner.watch(watcher, view, names)

    def unwatch(self, watcher: Watcher, view: ViewKey, names: Iterable[str]) -> None:
        self._inner.unwatch(watcher, view, names)

    def watch_all(self, watcher: Watcher, view: ViewKey) -> None:
        self._inner.watch_all(watcher, view)

    def unwatch_all(self, watcher: Watcher, view: ViewKey) -> None:
        self._inner.unwatch_all(watcher, view)

    def watch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None:
        self._inner.watch_services(watcher, view)

    def unwatch_services(self, watcher: ServicesWatcher, view: ViewKey) -> None:
        self._inner.unwatch_services(watcher, view)


def _is_config_cache(c: FollowerCache) -> ConfigCache:
    return c  # mypy checks that FollowerCache satisfies the protocol
