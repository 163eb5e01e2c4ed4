"""Where an interval's result goes: one small interface, three publishers.

`Publisher.publish(report)` is called once per interval with the IntervalReport. Route publishers
(the in-process xDS cache, a routes file) skip reports whose `publish_routes` is False (paused,
dry run); a status hook (the operator's) sees every report. A publisher that raises does not stop
the loop: the loop logs it, counts it and reports Applied=False, PublishFailed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from slate.control.report import IntervalReport
from slate.model.routing import Routing


class Publisher(Protocol):
    def publish(self, report: IntervalReport) -> None: ...


class RoutingSink(Protocol):
    """What the xDS publisher needs of slate.xds.cache.XdsCache."""

    def set_routing(self, routing: Routing) -> object: ...


class XdsPublisher:
    """Hands the weights in force to the in-process xDS cache (which pushes to the proxies)."""

    def __init__(self, cache: RoutingSink) -> None:
        self._cache = cache
        self._last: Routing | None = None

    def publish(self, report: IntervalReport) -> None:
        if not report.publish_routes:
            return
        routing = Routing(report.routes.routes)  # the cache compares routes, not predictions
        if routing == self._last:
            return
        self._cache.set_routing(routing)
        self._last = routing


class RoutesFilePublisher:
    """Writes the weights in force as a route file (`slate solve --format json` shape), atomically:
    a reader (`slate xds serve --routes`, a file watcher) never sees half a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def publish(self, report: IntervalReport) -> None:
        if not report.publish_routes:
            return
        text = Routing(report.routes.routes, report.predicted).dumps() + "\n"
        write_atomic(self.path, text)


class CallbackPublisher:
    """Calls `fn(report)` every interval (the operator's status writer uses this)."""

    def __init__(self, fn: Callable[[IntervalReport], None]) -> None:
        self._fn = fn

    def publish(self, report: IntervalReport) -> None:
        self._fn(report)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
