"""The xDS protocol state of one stream, without gRPC: subscriptions, nonces, ACK/NACK, versions.

`SotwStream` and `DeltaStream` take requests (`on_request`) and cache notifications
(`resources_changed`), and say what to send next (`next_response`). The gRPC layer (server.py)
only moves bytes. One class per protocol variant; the shared bookkeeping is in `StreamState`:

* **Subscriptions**: explicit names, or wildcard (`*`, or an empty first request). Only watched
  (view, name) pairs are built and only their watchers are woken on a change.
* **Sent / ACKed / NACKed versions per resource**: a resource is sent when its current version
  differs from the one last sent on this stream, and never when it equals the version this stream
  rejected: a NACKed version is not re-sent; the next *content* change is. Envoy keeps its last
  accepted config, which is what the stream's `acked` map records.
* **Nonces**: every response has a fresh nonce; a request naming a nonce resolves that response as
  ACK (no `error_detail`) or NACK. Requests with unknown (stale) nonces still update the
  subscription, since each request carries the client's current interest, and the diff-based
  sending means a stale request never causes a duplicate send.
* A response carries only resources that changed for this stream; in SotW that is allowed for
  EDS (only Listener and Cluster responses must be complete). Because the NACK of a response
  cannot say which of its resources was bad (the error text is not to be parsed), every resource
  in a rejected response counts as rejected at that version.
* **Absent resources** (the name's service is not in the endpoints): delta lists them in
  `removed_resources`; SotW, which has no removal for EDS, serves an empty CLA (no endpoints).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from slate.logs import kv
from slate.xds import defaults
from slate.xds.cache import ConfigCache, Resource
from slate.xds.callbacks import Callbacks
from slate.xds.config import FULL_STATE_TYPES
from slate.xds.resources import CLA_TYPE_URL
from slate.xds.views import InvalidNode, NodeMapper, ViewKey
from slate.xds.wire import with_nonce

log = logging.getLogger("slate.xds.protocol")

WILDCARD = "*"
ADS, EDS = "ads", "eds"
SOTW, DELTA = "sotw", "delta"
_MAX_OUTSTANDING = 64
_SLICE_SECONDS = 0.01  # a slice of a big subscription should take about this long at most
_NACK_MESSAGE_LIMIT = 500
_ABSENT = ""  # delta: the client was told the resource does not exist
_RESEND = "-"  # delta: the client dropped this one; its state must go out again


@dataclass(frozen=True)
class Limits:
    """What one client may make the server do (`slate xds serve` flags in brackets).

    Requests over `max_request_bytes` are refused by gRPC itself (RESOURCE_EXHAUSTED) before they
    are decoded; a request naming more than `max_names` resources, or a delta stream whose
    subscriptions would grow past it, ends that stream with RESOURCE_EXHAUSTED and a message
    naming the flag. `slice_names` bounds the names handled in one go before other streams get
    the event loop back, so no single request stalls the rest for long.
    """

    max_names: int = defaults.MAX_NAMES
    """Resource names per request and subscribed per stream [--max-names]."""
    max_request_bytes: int = defaults.MAX_REQUEST_BYTES
    """Serialised size of one request [--max-request-bytes]."""
    slice_names: int = 32
    """Names considered in the first step of building a big response (then the loop yields);
    later steps adapt (halving or doubling, up to 32x) so that each takes ~2-10 ms."""
    max_connection_age_s: float = defaults.MAX_CONNECTION_AGE_S
    """Seconds before a connection is asked to go (gRPC's GOAWAY; the proxy reconnects with a new
    TLS handshake and its streams are authorized again); 0 = never [--max-connection-age]."""


DEFAULT_LIMITS = Limits()


def clip(text: object, limit: int = 200) -> str:
    """A client-supplied string fit for a log line: at most `limit` characters, control characters
    escaped (logfmt quoting then escapes quotes and backslashes)."""
    s = str(text)
    if len(s) > limit:
        s = s[:limit] + f"...(+{len(s) - limit} chars)"
    return s.encode("unicode_escape").decode("ascii") if not s.isprintable() else s


class ProtocolError(Exception):
    """The stream must end with this gRPC status (the server and other streams carry on)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Outgoing(NamedTuple):
    """One response to write: its bytes and what it carries. (A named tuple: one is made per
    stream per push, and a tuple is the cheapest object to make.)"""

    payload: bytes
    nonce: str
    versions: Mapping[str, str]
    """name -> version sent ("" for a delta removal). May be shared between streams."""
    started: float | None
    """Monotonic start of the oldest cache update this response delivers (None if it answers
    a subscription rather than an update)."""


@dataclass(frozen=True)
class NackRecord:
    """A rejected response, as reported to logs, metrics and `XdsServer.recent_nacks`."""

    node_id: str
    view: str
    mode: str
    nonce: str
    versions: dict[str, str]
    code: int
    message: str
    at: float = field(default_factory=time.time)


class StreamState:
    """What one stream has subscribed to, been sent, ACKed and rejected (see the module doc).

    `sent`, `acked` and `nacked` map resource names to versions; `explicit` is the set of names
    subscribed by name, `wildcard` whether the stream also wants every name of its view.
    """

    mode = ""

    def __init__(
        self,
        cache: ConfigCache,
        node_mapper: NodeMapper,
        *,
        api: str,
        wake: Callable[[], None] = lambda: None,
        on_ack: Callable[[StreamState, bool], None] | None = None,
        on_nack: Callable[[NackRecord], None] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        callbacks: Callbacks | None = None,
        type_url: str = CLA_TYPE_URL,
        nonces: Iterator[int] | None = None,
    ) -> None:
        self.cache = cache
        self.type_url = type_url
        self.full_state = type_url in FULL_STATE_TYPES and self.mode == SOTW
        """SotW Listener/Cluster responses carry every subscribed resource; absence = removal."""
        self._nonces = nonces if nonces is not None else itertools.count(1)
        """Shared by the types of one ADS stream, so every response's nonce is unique on it."""
        self._requests = 0
        self._last_nonce = ""
        self._must_answer = False
        """Answer the next request even with nothing (Listener, Cluster, unserved types: a client
        waits for the first response before it goes on)."""
        self._rejected_full: Mapping[str, str] | None = None
        self._slice = limits.slice_names
        self._unwatched: set[str] = set()
        """Known explicit names not watched yet: watched as their slice is built."""
        self.limits = limits
        self.callbacks = callbacks
        self.node_mapper = node_mapper
        self.api = api
        self._wake = wake
        self._on_ack = on_ack
        self._on_nack = on_nack
        self.node_id = ""
        self.view: ViewKey | None = None
        self.explicit: set[str] = set()
        self.unknown: set[str] = set()
        """Explicit names whose service the cache does not know (yet): not watched one by one,
        nothing built or cached for them; the cache says when the set of services changes."""
        self.wildcard = False
        self.sent: dict[str, str] = {}
        self.acked: dict[str, str] = {}
        self.nacked: dict[str, str] = {}
        self.responses = 0
        self._outstanding: OrderedDict[str, Mapping[str, str]] = OrderedDict()
        self._dirty: set[str] = set()
        self._dirty_since: float | None = None
        self._closed = False
        self._legacy = False
        """Legacy wildcard: the first request named nothing, and none since has named anything."""

    # ---- cache notifications -----------------------------------------------------------------

    def resources_changed(self, names: Sequence[str], started: float) -> None:
        self._dirty.update(names)
        if self._dirty_since is None:
            self._dirty_since = started
        self._wake()

    def services_changed(self, started: float) -> None:
        """The cache's set of services changed: watch the names that now exist."""
        view = self.view
        if view is None or not self.unknown:
            return
        known = {n for n in self.unknown if self.cache.knows(n)}
        if not known:
            return
        self.unknown -= known
        if not self.unknown:
            self.cache.unwatch_services(self, view)
        self.cache.watch(self, view, known)
        self.resources_changed(sorted(known), started)

    # ---- requests ------------------------------------------------------------------------------

    def _check_count(self, count: int, what: str) -> None:
        limit = self.limits.max_names
        if count > limit:
            raise ProtocolError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{what} {count} resource names; the limit is {limit} (--max-names)",
            )

    def _identify(self, node: Any | None) -> ViewKey:
        if node is None:
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT, "the first request of a stream must carry node"
            )
        try:
            view = self.node_mapper(node)
        except InvalidNode as e:
            raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        self.node_id = str(node.id)
        self.view = view
        return view

    def _begin(self, req: Any) -> bool:
        """Identify the stream on its first request; True if this is the first of its type."""
        if self.view is None:
            self._identify(req.node if req.HasField("node") else None)
        first = self._requests == 0
        self._requests += 1
        if first and self.type_url != CLA_TYPE_URL:
            self._must_answer = True
        return first

    def _check_type(self, type_url: str) -> None:
        if type_url == self.type_url or (self.api == EDS and not type_url):
            return
        raise ProtocolError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"this stream serves {self.type_url}, not {clip(type_url)!r}",
        )

    def _resolve(self, nonce: str, error: Any | None) -> None:
        """ACK or NACK the response with this nonce (no-op for stale/unknown nonces)."""
        versions = self._outstanding.pop(nonce, None)
        if versions is None:
            log.debug("%s", kv("stale_nonce", node=clip(self.node_id), nonce=clip(nonce)))
            return
        # Responses are processed in order: anything sent before this one is settled too.
        while self._outstanding and int(next(iter(self._outstanding))) < int(nonce):
            self._outstanding.popitem(last=False)
        if error is None:
            acked, nacked = self.acked, self.nacked
            for name, version in versions.items():
                if version == _ABSENT:
                    acked.pop(name, None)
                else:
                    acked[name] = version
                if nacked and nacked.get(name) not in (None, version):
                    del nacked[name]
            if self._on_ack is not None:
                self._on_ack(self, True)
            if self.callbacks is not None:
                self.callbacks.on_ack(self, nonce)
            return
        self.nacked.update((n, v) for n, v in versions.items() if v != _ABSENT)
        if self.full_state:
            self._rejected_full = versions
        record = NackRecord(
            self.node_id,
            str(self.view),
            self.mode,
            nonce,
            dict(versions),
            int(error.code),
            str(error.message)[:_NACK_MESSAGE_LIMIT],
        )
        log.warning(
            "%s",
            kv(
                "nack",
                node=clip(record.node_id),
                view=clip(record.view),
                mode=self.mode,
                nonce=nonce,
                resources=",".join(f"{n}={v}" for n, v in sorted(versions.items())),
                code=record.code,
                detail=clip(record.message, _NACK_MESSAGE_LIMIT),
            ),
        )
        if self._on_ack is not None:
            self._on_ack(self, False)
        if self._on_nack is not None:
            self._on_nack(record)
        if self.callbacks is not None:
            self.callbacks.on_nack(self, record)

    def _set_subscription(self, explicit: set[str], wildcard: bool) -> None:
        view = self.view
        assert view is not None
        self._check_count(len(explicit), "the stream would subscribe to")
        cache = self.cache
        added, removed = explicit - self.explicit, self.explicit - explicit
        had_unknown = bool(self.unknown)
        if removed:
            gone = removed & self.unknown
            self.unknown -= gone
            pending = removed & self._unwatched
            self._unwatched -= pending
            cache.unwatch(self, view, removed - gone - pending)
        if added:
            unknown = {n for n in added if not cache.knows(n)}
            self.unknown |= unknown
            known = added - unknown if unknown else added
            if len(known) > self.limits.slice_names:
                # Many names: each is watched when its slice is built (watching costs an
                # allocation per name; done all at once it would stall the other streams).
                self._unwatched |= known
            else:
                cache.watch(self, view, known)
            self._dirty |= added
        if bool(self.unknown) != had_unknown:
            if self.unknown:
                cache.watch_services(self, view)
            else:
                cache.unwatch_services(self, view)
        self.explicit = explicit
        if wildcard != self.wildcard:
            self.wildcard = wildcard
            if wildcard:
                cache.watch_all(self, view)
                self._dirty |= cache.names(view)
            else:
                cache.unwatch_all(self, view)
                removed |= cache.names(view) - explicit
        for name in removed:
            if not self._wanted(name):
                self.sent.pop(name, None)
                self.acked.pop(name, None)  # a rejected version stays rejected

    def _wanted(self, name: str) -> bool:
        if name in self.explicit:
            return True
        return self.wildcard and self.view is not None and name in self.cache.names(self.view)

    # ---- responses ------------------------------------------------------------------------------

    def next_response(self) -> Outgoing | None:
        """What to send now, if anything; records it as sent."""
        if self.view is None or self._closed:
            self._dirty.clear()
            return None
        if not self._dirty:
            return self._empty_answer() if self._must_answer else None
        dirty = self._dirty
        started = self._dirty_since
        size = self._slice
        if len(dirty) <= size or self.full_state:
            names = sorted(dirty)
            dirty.clear()
            self._dirty_since = None
            if self._unwatched:
                self._watch_now(names)
            out = self._build(names)
        else:
            # One slice now; the rest on the next call, after other streams had their turn.
            # The slice adapts so that building one takes ~2-10 ms whatever a name costs.
            names = sorted(itertools.islice(dirty, size))
            dirty.difference_update(names)
            t0 = time.perf_counter()
            if self._unwatched:
                self._watch_now(names)
            out = self._build(names)
            spent = time.perf_counter() - t0
            if spent > _SLICE_SECONDS and size > 8:
                self._slice = size // 2
            elif spent < _SLICE_SECONDS / 5 and size < 32 * self.limits.slice_names:
                self._slice = size * 2
        if out is None:
            return self._empty_answer() if self._must_answer and not dirty else None
        payload, versions = out
        if self.full_state:
            self.sent.clear()  # a full-state response replaces what the client has
        return self._record(payload, versions, started)

    def _watch_now(self, names: Sequence[str]) -> None:
        now = self._unwatched.intersection(names)
        if now:
            self._unwatched -= now
            assert self.view is not None
            self.cache.watch(self, self.view, now)

    def _record(
        self, payload: bytes, versions: Mapping[str, str], started: float | None
    ) -> Outgoing:
        nonce = str(next(self._nonces))
        self._last_nonce = nonce
        self._must_answer = False
        self.sent.update(versions)
        outstanding = self._outstanding
        outstanding[nonce] = versions
        if len(outstanding) > _MAX_OUTSTANDING:
            outstanding.popitem(last=False)
        self.responses += 1
        return Outgoing(with_nonce(payload, nonce), nonce, versions, started)

    def _empty_answer(self) -> Outgoing:
        """A response with no resources (for SotW Listener/Cluster: there are none)."""
        if self.mode == SOTW:
            body = self.cache.sotw_response(())[0]
        else:
            body = self.cache.delta_body((), ())
        return self._record(body, {}, None)

    def _build(self, names: Sequence[str]) -> tuple[bytes, Mapping[str, str]] | None:
        raise NotImplementedError

    def _fresh(self, name: str, res: Resource) -> bool:
        """Whether `res` should go out: not what this stream has, not what it rejected."""
        return self.sent.get(name) != res.version and self.nacked.get(name) != res.version

    def close(self) -> None:
        """Stop watching (the stream ended)."""
        if self._closed or self.view is None:
            self._closed = True
            return
        self._closed = True
        self.cache.unwatch(self, self.view, self.explicit - self.unknown - self._unwatched)
        self._unwatched.clear()
        if self.unknown:
            self.cache.unwatch_services(self, self.view)
        if self.wildcard:
            self.cache.unwatch_all(self, self.view)

    def on_request(self, req: Any) -> None:
        raise NotImplementedError

    @property
    def has_pending(self) -> bool:
        """Whether `next_response()` may have something to send."""
        return bool(self._dirty) or self._must_answer

    @property
    def outstanding(self) -> int:
        """Responses sent and not yet ACKed or NACKed."""
        return len(self._outstanding)


class SotwStream(StreamState):
    """State-of-the-world: each request lists the full subscription and (after the first) ACKs or
    NACKs the response named by `response_nonce`."""

    mode = SOTW

    def on_request(self, req: Any) -> None:
        first = self._begin(req)
        self._check_type(req.type_url)
        nonce = req.response_nonce
        if nonce and self._last_nonce and nonce != self._last_nonce:
            # A stale request (it answers an earlier response than the latest): the protocol
            # says to ignore it; the client sends its current interest with the latest nonce.
            log.debug("%s", kv("stale_nonce", node=clip(self.node_id), nonce=clip(nonce)))
            return
        if nonce:
            self._resolve(nonce, req.error_detail if req.HasField("error_detail") else None)
        self._check_count(len(req.resource_names), "the request names")
        names = set(req.resource_names)
        if first:
            self._legacy = not names
        if self._legacy:
            if not names:
                # Legacy wildcard (an empty first request) lasts while requests stay empty.
                if first:
                    self._set_subscription(set(), True)
                return
            self._legacy = False  # any name, '*' included, ends it for good
        elif not first and names == self.explicit and not self.wildcard:
            return  # the usual ACK/NACK: subscription unchanged
        wildcard = WILDCARD in names
        names.discard(WILDCARD)
        # Outside legacy mode an empty list subscribes to nothing, even after ['*'].
        self._set_subscription(names, wildcard)

    def _build(self, names: Sequence[str]) -> tuple[bytes, Mapping[str, str]] | None:
        if self.full_state:
            return self._build_full()
        # The per-stream hot path of a push: `_wanted` and `_fresh` inlined.
        view, cache, sent, nacked = self.view, self.cache, self.sent, self.nacked
        assert view is not None
        explicit = self.explicit
        everything = cache.names(view) if self.wildcard else ()
        out: list[Resource] = []
        for name in names:
            wanted = name in explicit or name in everything
            if not wanted and name not in sent:
                continue
            res = cache.resource(view, name) if wanted else None
            if res is None:
                if name not in sent:
                    # Never existed for this stream: SotW EDS need not answer (the client's
                    # does-not-exist timer covers it), and nothing is allocated per such name.
                    continue
                res = cache.empty_resource(name)  # it existed: tell the client it is empty now
            version = res.version
            if sent.get(name) != version and nacked.get(name) != version:
                out.append(res)
        if not out:
            return None
        body, _version_info, versions = cache.sotw_response(out)
        return body, versions

    def _build_full(self) -> tuple[bytes, Mapping[str, str]] | None:
        """Listener / Cluster: every subscribed resource that exists, or nothing if that is what
        the client has (or rejected)."""
        view, cache = self.view, self.cache
        assert view is not None
        wanted = self.explicit - self.unknown
        if self.wildcard:
            wanted = wanted | cache.names(view)
        out = [r for n in sorted(wanted) if (r := cache.resource(view, n)) is not None]
        versions = {r.name: r.version for r in out}
        if self.responses and versions == self.sent:
            return None
        if self._rejected_full is not None and versions == dict(self._rejected_full):
            return None
        body, _version_info, shared = cache.sotw_response(out)
        return body, shared


class DeltaStream(StreamState):
    """Incremental: requests carry subscription changes and, separately, ACK/NACK by nonce."""

    mode = DELTA

    def on_request(self, req: Any) -> None:
        first = self._begin(req)
        self._check_type(req.type_url)
        if req.response_nonce:
            self._resolve(
                req.response_nonce, req.error_detail if req.HasField("error_detail") else None
            )
        self._check_count(
            len(req.resource_names_subscribe) + len(req.resource_names_unsubscribe),
            "the request names",
        )
        subscribe = set(req.resource_names_subscribe)
        unsubscribe = set(req.resource_names_unsubscribe)
        if first:
            for name, version in req.initial_resource_versions.items():
                self.sent[name] = version
                self._dirty.add(name)
            self._legacy = not subscribe
            if self._legacy:
                self._set_subscription(set(), True)
        if self._legacy:
            if not subscribe:
                # Legacy wildcard lasts until the client subscribes to something; only a
                # subscription ends it (unsubscribing, even from '*', does not).
                return
            self._legacy = False  # the wildcard itself stays until '*' is unsubscribed
        wildcard = self.wildcard
        if WILDCARD in subscribe:
            wildcard = True
        if WILDCARD in unsubscribe:
            wildcard = False
        # Subscribing again to a subscribed name asks for it again (the client may have lost it).
        again = set() if first else subscribe & self.explicit
        explicit = (self.explicit | subscribe) - unsubscribe - {WILDCARD}
        self._set_subscription(explicit, wildcard)
        for name in again:
            self.sent.pop(name, None)
            self._dirty.add(name)
        if wildcard:
            # Unsubscribing a name while subscribed to the wildcard: the client dropped it and
            # expects its state again, the resource if it still exists or its removal if not.
            for name in unsubscribe - {WILDCARD}:
                self.sent[name] = _RESEND
                self._dirty.add(name)

    def _build(self, names: Sequence[str]) -> tuple[bytes, Mapping[str, str]] | None:
        view, cache, sent, nacked = self.view, self.cache, self.sent, self.nacked
        assert view is not None
        explicit = self.explicit
        everything = cache.names(view) if self.wildcard else ()
        out: list[Resource] = []
        removed: list[str] = []
        for name in names:
            wanted = name in explicit or name in everything
            if not wanted and name not in sent:
                continue
            res = cache.resource(view, name) if wanted else None
            if res is None:
                if sent.get(name) != _ABSENT:
                    removed.append(name)
            elif sent.get(name) != res.version and nacked.get(name) != res.version:
                out.append(res)
        if not out and not removed:
            return None
        body = cache.delta_body(out, removed)
        versions = {r.name: r.version for r in out}
        versions.update((name, _ABSENT) for name in removed)
        return body, versions


class AdsStream:
    """One ADS stream: a SotW or delta state per resource type, created at its first request.

    The node (first request) chooses the view for every type. Types slate serves get their cache
    from `caches`; any other type gets an `UnservedCache` (an empty answer), so a client asking
    for, say, Secrets does not lose its Listeners, Clusters and endpoints with the stream.
    Responses of all types share one nonce sequence. Presents the same surface as a `StreamState`
    to the server (on_request, has_pending, next_response, close, view, ...).
    """

    def __init__(
        self,
        kind: type[StreamState],
        caches: Mapping[str, ConfigCache],
        unserved: Callable[[str], ConfigCache],
        node_mapper: NodeMapper,
        *,
        wake: Callable[[], None],
        limits: Limits = DEFAULT_LIMITS,
        callbacks: Callbacks | None = None,
    ) -> None:
        self.kind = kind
        self.mode = kind.mode
        self.api = ADS
        self.caches = caches
        self.unserved = unserved
        self.node_mapper = node_mapper
        self.limits = limits
        self.callbacks = callbacks
        self._wake = wake
        self._nonces = itertools.count(1)
        self.types: dict[str, StreamState] = {}
        self.node_id = ""
        self.view: ViewKey | None = None
        self._turn = 0

    def on_request(self, req: Any) -> None:
        type_url = str(req.type_url)
        sub = self.types.get(type_url)
        if sub is None:
            if not type_url:
                raise ProtocolError(
                    grpc.StatusCode.INVALID_ARGUMENT, "an ADS request must carry type_url"
                )
            if len(self.types) >= 16:
                raise ProtocolError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "too many resource types on one stream"
                )
            cache = self.caches.get(type_url) or self.unserved(type_url)
            sub = self.kind(
                cache,
                self.node_mapper,
                api=ADS,
                wake=self._wake,
                limits=self.limits,
                callbacks=self.callbacks,
                type_url=type_url,
                nonces=self._nonces,
            )
            if self.view is not None:
                sub.view, sub.node_id = self.view, self.node_id
            elif not req.HasField("node"):
                raise ProtocolError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "the first request of a stream must carry node",
                )
            self.types[type_url] = sub
        sub.on_request(req)
        if self.view is None:
            self.view, self.node_id = sub.view, sub.node_id

    @property
    def has_pending(self) -> bool:
        for s in self.types.values():  # noqa: SIM110 (a plain loop: called per push per stream)
            if s._dirty or s._must_answer:
                return True
        return False

    def next_response(self) -> Outgoing | None:
        """The next response of the types in turn (one slice of one type per call)."""
        if len(self.types) == 1:  # the usual case (an Envoy on EDS only): no rotation needed
            for only in self.types.values():
                return only.next_response()
        subs = list(self.types.values())
        for i in range(len(subs)):
            sub = subs[(self._turn + i) % len(subs)]
            if sub.has_pending:
                self._turn = (self._turn + i + 1) % len(subs)
                return sub.next_response()
        return None

    @property
    def outstanding(self) -> int:
        return sum(s.outstanding for s in self.types.values())

    @property
    def responses(self) -> int:
        return sum(s.responses for s in self.types.values())

    def close(self) -> None:
        for s in self.types.values():
            s.close()
