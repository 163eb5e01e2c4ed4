"""Hooks into the life of xDS streams, in the style of go-control-plane's `server.Callbacks`.

The server calls one `Callbacks` object (usually a `CallbackList`) at each step of each stream, so
metrics, NACK reporting (the operator's status and Events) and any embedding's own bookkeeping
plug in without closures in the stream handler. Callbacks run on the server's event loop and must
not block; an exception in one is logged and does not reach the stream.

    on_stream_open(stream)            the first request named a usable node: stream.view is set
    on_stream_request(stream, req)    every decoded request of an open stream (after handling)
    on_stream_response(stream, out)   a response was written
    on_ack(stream, nonce)             a response was ACKed
    on_nack(stream, record)           a response was rejected (NackRecord: versions, message)
    on_stream_error(stream, error)    the server ends the stream with this ProtocolError
    on_stream_closed(stream)          an opened stream ended (always paired with on_stream_open)
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from slate.logs import kv
from slate.xds.metrics import XdsMetrics
from slate.xds.views import ViewKey

if TYPE_CHECKING:
    from slate.xds.protocol import NackRecord, Outgoing, ProtocolError, StreamState

log = logging.getLogger("slate.xds.callbacks")

OTHER_VIEW = "other"
"""The `view` label of streams whose view slate does not know (client-chosen names never become
label values)."""


class Callbacks:
    """No-op base: subclass and override what you need."""

    def on_stream_open(self, stream: StreamState) -> None:
        pass

    def on_stream_request(self, stream: StreamState, request: Any) -> None:
        pass

    def on_stream_response(self, stream: StreamState, out: Outgoing) -> None:
        pass

    def on_ack(self, stream: StreamState, nonce: str) -> None:
        pass

    def on_nack(self, stream: StreamState, record: NackRecord) -> None:
        pass

    def on_stream_error(self, stream: StreamState, error: ProtocolError) -> None:
        pass

    def on_stream_closed(self, stream: StreamState) -> None:
        pass


_HOOKS = (
    "on_stream_open",
    "on_stream_request",
    "on_stream_response",
    "on_ack",
    "on_nack",
    "on_stream_error",
    "on_stream_closed",
)


class CallbackList(Callbacks):
    """Calls each of several callbacks in order; one failing is logged, the others still run.

    Hooks a callback does not override are skipped (a push to 10,000 streams calls
    `on_stream_response` 10,000 times: no-op calls add up)."""

    def __init__(self, callbacks: Iterable[Callbacks] = ()) -> None:
        self.callbacks = list(callbacks)
        self._hooks: dict[str, list[Callable[..., None]]] = {
            hook: [
                getattr(cb, hook)
                for cb in self.callbacks
                if getattr(type(cb), hook, None) is not getattr(Callbacks, hook)
            ]
            for hook in _HOOKS
        }

    def _each(self, hook: str, *args: Any) -> None:
        for fn in self._hooks[hook]:
            try:
                fn(*args)
            except Exception:
                owner = type(getattr(fn, "__self__", fn)).__name__
                log.exception("%s", kv("callback_failed", callback=owner, hook=hook))

    def on_stream_open(self, stream: StreamState) -> None:
        self._each("on_stream_open", stream)

    def on_stream_request(self, stream: StreamState, request: Any) -> None:
        if self._hooks["on_stream_request"]:
            self._each("on_stream_request", stream, request)

    def on_stream_response(self, stream: StreamState, out: Outgoing) -> None:
        if self._hooks["on_stream_response"]:
            self._each("on_stream_response", stream, out)

    def on_ack(self, stream: StreamState, nonce: str) -> None:
        if self._hooks["on_ack"]:
            self._each("on_ack", stream, nonce)

    def on_nack(self, stream: StreamState, record: NackRecord) -> None:
        self._each("on_nack", stream, record)

    def on_stream_error(self, stream: StreamState, error: ProtocolError) -> None:
        self._each("on_stream_error", stream, error)

    def on_stream_closed(self, stream: StreamState) -> None:
        self._each("on_stream_closed", stream)


class MetricsCallbacks(Callbacks):
    """The server's Prometheus metrics, kept from the callbacks.

    Labels come only from names slate knows: `view` is `service@cluster` when `known_view(view)`
    says the view exists in the routing or the endpoints, else `other`. A view's series (streams,
    ACKs, NACKs) are removed when its last stream ends, so /metrics does not grow with the views
    clients have made up or left. The streams gauge counts opened streams only, each once, so it
    cannot go below zero.
    """

    def __init__(self, metrics: XdsMetrics, known_view: Callable[[ViewKey], bool]) -> None:
        self.metrics = metrics
        self.known_view = known_view
        self._live: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._per_view: collections.Counter[str] = collections.Counter()
        self._label: dict[int, tuple[str, str, str]] = {}
        self._labels: dict[ViewKey, str] = {}
        """view -> label, decided once per view while it has streams (ACKs are hot)."""
        self._children: dict[tuple[str, str, bool], Any] = {}
        self._pushes: dict[str, Any] = {}

    def label(self, stream: StreamState) -> str:
        view = stream.view
        if view is None:
            return OTHER_VIEW
        got = self._labels.get(view)
        if got is None:
            got = str(view) if self.known_view(view) else OTHER_VIEW
            if len(self._labels) >= 10_000:
                self._labels.clear()
            self._labels[view] = got
        return got

    def on_stream_open(self, stream: StreamState) -> None:
        key = (stream.api, stream.mode, self.label(stream))
        self._label[id(stream)] = key
        self._live[key] += 1
        self._per_view[key[2]] += 1
        self.metrics.streams.labels(*key).set(self._live[key])

    def on_stream_closed(self, stream: StreamState) -> None:
        key = self._label.pop(id(stream), None)
        if key is None:
            return
        self._live[key] -= 1
        if self._live[key] > 0:
            self.metrics.streams.labels(*key).set(self._live[key])
        else:
            del self._live[key]
            with contextlib.suppress(KeyError):
                self.metrics.streams.remove(*key)
        view = key[2]
        self._per_view[view] -= 1
        if self._per_view[view] <= 0:
            del self._per_view[view]
            if stream.view is not None:
                self._labels.pop(stream.view, None)
            for family in (self.metrics.acks, self.metrics.nacks):
                for mode in ("sotw", "delta"):
                    self._children.pop((mode, view, family is self.metrics.acks), None)
                    with contextlib.suppress(KeyError):
                        family.remove(mode, view)

    def _counter(self, stream: StreamState, ack: bool) -> Any:
        key = (stream.mode, self.label(stream), ack)
        child = self._children.get(key)
        if child is None:
            family = self.metrics.acks if ack else self.metrics.nacks
            child = self._children[key] = family.labels(key[0], key[1])
        return child

    def on_stream_response(self, stream: StreamState, out: Outgoing) -> None:
        child = self._pushes.get(stream.mode)
        if child is None:
            child = self._pushes[stream.mode] = self.metrics.pushes.labels(stream.mode)
        child.inc()

    def on_ack(self, stream: StreamState, nonce: str) -> None:
        self._counter(stream, True).inc()

    def on_nack(self, stream: StreamState, record: NackRecord) -> None:
        self._counter(stream, False).inc()

    def on_stream_error(self, stream: StreamState, error: ProtocolError) -> None:
        self.metrics.stream_errors.labels(error.code.name).inc()


class NackHistory(Callbacks):
    """The latest rejected responses (for status reporting), newest last."""

    def __init__(self, size: int = 100) -> None:
        self.records: collections.deque[NackRecord] = collections.deque(maxlen=size)

    def on_nack(self, stream: StreamState, record: NackRecord) -> None:
        self.records.append(record)
