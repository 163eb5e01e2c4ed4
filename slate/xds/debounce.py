"""A debounce in front of cache updates, after Istio's (pilot/pkg/xds/discovery.go `debounce`).

Endpoint churn arrives as many small events (an EndpointSlice per service per cluster, from N
clusters, each rolling restart a burst). Applying each one would rebuild every watched view per
event. `Debouncer` collects them and applies the merged result once things are quiet:

* an update is applied `quiet_s` after the last event (each new event restarts that wait),
* but never later than `max_delay_s` after the first event it holds, so constant churn still
  reaches proxies at a steady pace;
* routing: the latest wins; whole endpoint sets: the latest wins; per-(service, cluster) endpoint
  changes (`set_cluster_endpoints`) are merged on top of the latest whole set.

Run `await debouncer.run()` as a task on the server's event loop (the cache is not thread-safe);
`flush()` applies what is pending at once (e.g. before shutdown). A failing update is logged and
counted, and the debouncer carries on with the next event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from slate.logs import kv
from slate.model.routing import Routing
from slate.xds.cache import UpdateResult
from slate.xds.endpoints import Endpoints, EndpointSet

log = logging.getLogger("slate.xds.debounce")


class UpdatableCache(Protocol):
    """What the debouncer needs of a cache: its endpoints now, and one merged update.

    `XdsCache` (leader) and `FollowerCache` (routing from status, endpoints only) both are.
    """

    @property
    def endpoints(self) -> EndpointSet: ...

    def update(
        self, routing: Routing | None = None, endpoints: EndpointSet | None = None
    ) -> UpdateResult: ...


@dataclass
class DebounceStats:
    events: int = 0
    """Updates submitted."""
    applied: int = 0
    """Cache updates made from them."""
    failed: int = 0
    """Cache updates that raised (logged; the events they held are dropped)."""


class Debouncer:
    def __init__(
        self, cache: UpdatableCache, *, quiet_s: float = 0.1, max_delay_s: float = 1.0
    ) -> None:
        if not 0 <= quiet_s <= max_delay_s:
            raise ValueError(f"need 0 <= quiet_s <= max_delay_s, got {quiet_s}, {max_delay_s}")
        self.cache = cache
        self.quiet_s = quiet_s
        self.max_delay_s = max_delay_s
        self.stats = DebounceStats()
        self._routing: Routing | None = None
        self._endpoints: EndpointSet | None = None
        self._clusters: dict[tuple[str, str], Endpoints | None] = {}
        self._first: float | None = None
        self._last = 0.0
        self._pending = asyncio.Event()

    # ---- events -------------------------------------------------------------------------------

    def set_routing(self, routing: Routing) -> None:
        self._routing = routing
        self._event()

    def set_endpoints(self, endpoints: EndpointSet) -> None:
        """A whole new endpoint set (earlier per-cluster changes are superseded)."""
        self._endpoints = endpoints
        self._clusters.clear()
        self._event()

    def set_cluster_endpoints(
        self, service: str, cluster: str, endpoints: Endpoints | None
    ) -> None:
        """The endpoints of one service in one cluster now (None: the service left that
        cluster), e.g. from one EndpointSlice watch event."""
        self._clusters[(service, cluster)] = endpoints
        self._event()

    def _event(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._first is None:
            self._first = now
        self._last = now
        self.stats.events += 1
        self._pending.set()

    # ---- applying -----------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return self._first is not None

    async def run(self) -> None:
        """Apply merged updates forever (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._pending.wait()
            while self._first is not None:
                due = min(self._last + self.quiet_s, self._first + self.max_delay_s)
                wait = due - loop.time()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self.flush()

    def flush(self) -> UpdateResult | None:
        """Apply whatever is pending now; None if nothing was."""
        self._pending.clear()
        if self._first is None:
            return None
        self._first = None
        routing, self._routing = self._routing, None
        endpoints, self._endpoints = self._endpoints, None
        clusters, self._clusters = self._clusters, {}
        try:
            if clusters:
                endpoints = merge_clusters(endpoints or self.cache.endpoints, clusters)
            result = self.cache.update(routing=routing, endpoints=endpoints)
        except Exception:
            self.stats.failed += 1
            log.exception("%s", kv("debounced_update_failed"))
            return None
        self.stats.applied += 1
        return result


def merge_clusters(
    base: EndpointSet, changes: Mapping[tuple[str, str], Endpoints | None]
) -> EndpointSet:
    """`base` with each (service, cluster) replaced by its new endpoints (None: removed)."""
    services = {s: dict(by) for s, by in base.services.items()}
    for (service, cluster), eps in changes.items():
        by = services.setdefault(service, {})
        if eps is None:
            by.pop(cluster, None)
            if not by:
                del services[service]
        else:
            # Keep the same tuple object when nothing changed: the CLA writer keys on identity.
            old = by.get(cluster)
            by[cluster] = old if old == eps else eps
    return EndpointSet(services, base.rtt_ms)
