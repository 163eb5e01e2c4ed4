"""Every replica: serve xDS from the routes the leader wrote into the policies' status.

A list+watch of TrafficPolicies (in the operator's namespaces) feeds slate.xds's `FollowerCache`:
each `output: xds` policy's `status.routes` are served as they are; a policy that is deleted,
switched to another output, or not acted on (a Conflict loser has no routes) stops being served.
The leader serves from the same cache, fed the same way, so all replicas are equal and a leader
change moves no traffic. It also tells the endpoint watcher which services (and ports) the
policies route, per namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slate.logs import kv
from slate.model.errors import InputError
from slate.xds.follower import FollowerCache

log = logging.getLogger("slate.operator.follower")

Routed = dict[str, dict[str, int]]
"""namespace -> service -> port, of the policies' specs: each service name once, for the oldest
policy routing it (the one the leader acts on; a newer one is refused with Conflict)."""


class StatusFollower:
    def __init__(
        self,
        cache: FollowerCache,
        on_routed: Callable[[Routed], None] | None = None,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self.cache = cache
        self.on_routed = on_routed
        self.on_applied = on_applied
        self._known: dict[tuple[str, str], dict[str, int]] = {}
        self._created: dict[tuple[str, str], str] = {}
        self._last_routed: Routed | None = None
        self.served: set[tuple[str, str]] = set()
        """Policies whose routes the cache serves now."""
        self.rejected = 0

    def handle(self, kind: str, objs: list[dict[str, Any]]) -> None:
        """A watch event: SYNC (the full list), ADDED, MODIFIED or DELETED."""
        if kind == "SYNC":
            seen = {_key(o) for o in objs}
            for key in list(self._known):
                if key not in seen:
                    self._forget(key)
            for o in objs:
                self._apply(o)
        elif kind == "DELETED":
            for o in objs:
                self._forget(_key(o))
        else:
            for o in objs:
                self._apply(o)
        if self.on_routed is not None:
            routed = self.routed()
            if routed != self._last_routed:  # status writes do not change what is routed
                self._last_routed = routed
                self.on_routed(routed)

    def routed(self) -> Routed:
        out: Routed = {}
        taken: set[str] = set()
        # the order conflicts.py decides by: older first, then namespace and name
        for key in sorted(self._known, key=lambda k: (self._created.get(k, ""), k)):
            target = out.setdefault(key[0], {})
            for s, port in self._known[key].items():
                if s not in taken:
                    taken.add(s)
                    target.setdefault(s, port)
        return {ns: svcs for ns, svcs in out.items() if svcs}

    def _apply(self, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        spec = obj.get("spec") or {}
        self._known[key] = _services(spec)
        self._created[key] = str((obj.get("metadata") or {}).get("creationTimestamp") or "")
        if spec.get("output", "xds") != "xds":
            self._forget_routes(key)
            return
        try:
            result = self.cache.follow_status(key[0], key[1], obj.get("status") or {})
            self.served.add(key)
        except InputError as e:  # keep serving what it had
            self.rejected += 1
            log.warning("%s", kv("status_rejected", policy=f"{key[0]}/{key[1]}", error=str(e)))
            return
        if result is not None:
            log.info(
                "%s",
                kv("routes_followed", policy=f"{key[0]}/{key[1]}", generation=result.generation),
            )
            if self.on_applied is not None:
                self.on_applied()

    def _forget(self, key: tuple[str, str]) -> None:
        self._known.pop(key, None)
        self._created.pop(key, None)
        self._forget_routes(key)

    def _forget_routes(self, key: tuple[str, str]) -> None:
        self.served.discard(key)
        if self.cache.forget(key[0], key[1]) is not None:
            log.info("%s", kv("routes_forgotten", policy=f"{key[0]}/{key[1]}"))
            if self.on_applied is not None:
                self.on_applied()


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name")))


def _services(spec: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in spec.get("services") or []:
        if isinstance(s, Mapping) and isinstance(s.get("name"), str):
            port = s.get("port")
            out[s["name"]] = port if isinstance(port, int) else 0
    return out
