"""What slate observed of a mesh at one instant: the `Observation` value and its source protocol.

An `Observation` is everything the control loop may know about the live mesh for one policy at one
evaluation time `at` (closed-loop.md): rates, latencies, splits, bytes and RTT, now and as aligned
time series over the lookback. It is built from Istio's standard metrics only, never from a
scenario, so the loop cannot peek at the truth. It is immutable (frozen dataclasses, read-only
mappings, tuples), so it can be logged, cached and compared.

Naming used throughout:

- an **endpoint id** is `service.endpoint` for an endpoint class the policy lists, or the bare
  service name when the policy lists no endpoints for that service (`TrafficPolicy.endpoint_ids()`);
- a **station** is `(service, cluster)`: `destination_service_name` x `destination_cluster`;
- **ingress** is every call whose `source_canonical_service` is not a routed service; its source
  service is reported as `"ingress"` (scenario-format.md's route shape), its cluster is the
  gateway's `source_cluster`;
- rates are requests per second, `rate(...[window_s])` evaluated at each timestamp;
- latencies are milliseconds; bytes are kB (1 kB = 1000 bytes, as in scenario-format.md).

Timestamps are float seconds since the Unix epoch (what Prometheus returns), and every series in
one Observation is sampled on the same grid `Observation.times` (ascending, the last one is `at`).
A value that could not be computed at a timestamp (no data yet, 0/0) is `math.nan` in a series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, Protocol

Series = tuple[float, ...]
"""Values aligned on `Observation.times`; `math.nan` where unknown."""

RttSource = Literal["policy", "measured", "unmeasured"]

INGRESS = "ingress"
"""Source service name of ingress calls (the gateway), as in scenario-format.md's routes."""


class TelemetryUnavailable(Exception):
    """The telemetry backend could not be reached or did not answer (connection refused, timeout,
    HTTP 5xx). The loop keeps its last good weights and reports TelemetryFresh=False. Bad or empty
    *answers* are not this: they land in `Observation.problems`."""


# --- The parts of a TrafficPolicy that telemetry reads (BRIEF interface 1). ---------------------
# slate.model.policy.TrafficPolicy satisfies these structurally; telemetry needs no more of it.


class PolicyClusterView(Protocol):
    @property
    def name(self) -> str: ...


class PolicyEndpointView(Protocol):
    @property
    def name(self) -> str: ...


class PolicyServiceView(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def endpoints(self) -> Sequence[PolicyEndpointView]: ...


class PolicyView(Protocol):
    """What telemetry reads of a `TrafficPolicy`: which services and clusters, which endpoint
    classes (and the metric label carrying them), the given RTTs, the rate window."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def clusters(self) -> Sequence[PolicyClusterView]: ...

    @property
    def services(self) -> Sequence[PolicyServiceView]: ...

    @property
    def rtt_ms(self) -> Mapping[tuple[str, str], float]: ...

    @property
    def window_s(self) -> float: ...

    @property
    def endpoint_label(self) -> str: ...


# --- The value. ----------------------------------------------------------------------------------


def _ro(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class StationObservation:
    """One station `(service, cluster)`: its load and latency now, and their history.

    Now (at `Observation.at`):
      - `rps`: requests per second served (destination-reported), all endpoint classes;
      - `rps_by_endpoint`: the same per endpoint id (sums to `rps`);
      - `latency_ms`: mean destination-reported duration (inclusive of the calls it makes);
      - `outbound_ms_per_request`: source-reported duration of the calls this station makes, per
        request it serves (RTT + callee time, summed over the calls one request makes);
      - `own_latency_ms`: `latency_ms - outbound_ms_per_request`, the station's own time
        (work + queueing), the y of its latency-vs-load curve; None when unknown (no traffic).

    History, aligned on `Observation.times`:
      - `rps_series[endpoint id]`: inbound rps per endpoint class (the x of the curve, and the
        regressors of call-graph learning);
      - `own_latency_series`: own mean latency ms (nan where the station served nothing);
      - `outbound_series[destination endpoint id]`: the rps of calls this station (its sidecars,
        reporter=source) makes to each destination endpoint, summed over destination clusters (the
        responses of call-graph learning: outbound = sum_e per_request(e -> d) * inbound_e);
      - `latency_series_by_endpoint[endpoint id]`: mean destination-reported (inclusive) duration
        per endpoint class (nan where the class served nothing): Istio's duration histogram carries
        the class label, so each class's own time is observable, not only the station's mix;
      - `outbound_ms_series[destination endpoint id]`: mean source-reported duration of one call
        this station makes to that endpoint (RTT + callee time; nan where it made none): with the
        learned calls per request of each class it gives a caller's own time per class.
    """

    service: str
    cluster: str
    rps: float
    rps_by_endpoint: Mapping[str, float]
    latency_ms: float | None
    outbound_ms_per_request: float | None
    own_latency_ms: float | None
    rps_series: Mapping[str, Series]
    own_latency_series: Series
    outbound_series: Mapping[str, Series]
    latency_series_by_endpoint: Mapping[str, Series] = field(default_factory=dict)
    outbound_ms_series: Mapping[str, Series] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency_series_by_endpoint", _ro(self.latency_series_by_endpoint))
        object.__setattr__(self, "rps_by_endpoint", _ro(self.rps_by_endpoint))
        object.__setattr__(self, "rps_series", _ro(self.rps_series))
        object.__setattr__(self, "outbound_series", _ro(self.outbound_series))
        object.__setattr__(self, "outbound_ms_series", _ro(self.outbound_ms_series))

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.cluster)

    @property
    def total_rps_series(self) -> Series:
        """Inbound rps of all classes per timestamp (nan-free: missing classes count as 0)."""
        cols = list(self.rps_series.values())
        if not cols:
            return ()
        return tuple(
            sum(0.0 if math.isnan(c[i]) else c[i] for c in cols) for i in range(len(cols[0]))
        )


@dataclass(frozen=True)
class ObservedRoute:
    """The split observed now for one route key (scenario-format.md's route shape): calls made by
    sidecars of `from_service` (`"ingress"` for gateways) in `from_cluster` to endpoint `to`.
    `weights` are shares over destination clusters (sum 1); `rps` is the route's total rate."""

    from_service: str
    from_cluster: str
    to: str
    rps: float
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _ro(self.weights))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.from_service, self.from_cluster, self.to)

    def to_json(self) -> dict[str, Any]:
        return {
            "from_service": self.from_service,
            "from_cluster": self.from_cluster,
            "to": self.to,
            "weights": {c: round(w, 6) for c, w in sorted(self.weights.items())},
        }


@dataclass(frozen=True)
class BytesPerCall:
    """Mean payload of one call from `from_service` (`"ingress"` for gateways) to endpoint `to`,
    source-reported (`istio_request_bytes` / `istio_response_bytes` sum over count), in kB."""

    from_service: str
    to: str
    request_kb: float
    response_kb: float


@dataclass(frozen=True)
class Rtt:
    """Round-trip time between two clusters (symmetric: (a, b) and (b, a) carry the same value).

    `source`: "policy" (the policy's `network.rtt`, either direction), "measured" (mean
    source-reported minus mean destination-reported duration of the calls between the two clusters,
    both directions pooled), or "unmeasured" (`ms` is None: no policy value and no traffic)."""

    from_cluster: str
    to_cluster: str
    ms: float | None
    source: RttSource


@dataclass(frozen=True)
class Observation:
    """Everything observed at `at` for one policy (see the module docstring for conventions).

    - `at`: the evaluation time (UTC); `window_s`: the rate window; `lookback_s` / `step_s`: the
      history span and the spacing of `times`.
    - `times`: the common timestamp grid of every series (unix seconds, ascending, last = `at`).
    - `newest_sample_at`: timestamp of the newest raw sample of the policy's metrics (staleness:
      `at - newest_sample_at`), None when there was none.
    - `endpoints`: the endpoint ids of the policy (what keys below may name).
    - `ingress[(entry endpoint id, gateway cluster)]`: ingress rps now.
      `ingress_series[(...)]`: the same over `times`.
    - `stations[(service, cluster)]`: see StationObservation; a station appears when it has any
      data in the lookback.
    - `calls[(from_service, from_cluster, to endpoint id, to_cluster)]`: source-reported call rps
      now (`from_service` is "ingress" for gateways). `routes[(from_service, from_cluster, to)]`:
      the same as observed splits.
    - `bytes_per_call[(from_service, to endpoint id)]`: kB per call now.
    - `rtt[(a, b)]`: every ordered pair of distinct policy clusters.
    - `problems`: human-readable findings (missing series, NaN answers, counter resets, partial
      scrapes, reporters disagreeing, labels the policy does not know); never raised.
    """

    policy: str  # "namespace/name"
    at: datetime
    window_s: float
    lookback_s: float
    step_s: float
    times: Series
    newest_sample_at: datetime | None
    endpoints: tuple[str, ...]
    ingress: Mapping[tuple[str, str], float]
    ingress_series: Mapping[tuple[str, str], Series]
    stations: Mapping[tuple[str, str], StationObservation]
    calls: Mapping[tuple[str, str, str, str], float]
    routes: Mapping[tuple[str, str, str], ObservedRoute]
    bytes_per_call: Mapping[tuple[str, str], BytesPerCall]
    rtt: Mapping[tuple[str, str], Rtt]
    problems: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("ingress", "ingress_series", "stations", "calls", "routes", "bytes_per_call"):
            object.__setattr__(self, name, _ro(getattr(self, name)))
        object.__setattr__(self, "rtt", _ro(self.rtt))

    @property
    def has_data(self) -> bool:
        """True when any station or ingress traffic was seen."""
        return bool(self.stations) or any(v > 0 for v in self.ingress.values())

    @property
    def staleness_s(self) -> float | None:
        """Seconds between `at` and the newest sample (None when no sample was seen)."""
        if self.newest_sample_at is None:
            return None
        return (self.at - self.newest_sample_at).total_seconds()

    @property
    def total_ingress_rps(self) -> float:
        return sum(self.ingress.values())

    def to_json(self) -> dict[str, Any]:
        """The telemetry part of `slate observe`'s JSON (closed-loop.md): `at`, `window_s`,
        `ingress`, `stations` (without `curve`), `routes`, `rtt_ms`, `bytes_kb`, plus
        `newest_sample_at` and `problems`. Learning adds `calls` and each station's `curve`.
        A station's `mean_latency_ms` is its own latency (what its curve models), `samples` the
        lookback points with traffic and a latency."""

        def num(x: float | None, nd: int = 4) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, nd)

        stations = []
        for st in sorted(self.stations.values(), key=lambda s: s.key):
            total = st.total_rps_series
            samples = sum(
                1
                for r, lat in zip(total, st.own_latency_series, strict=False)
                if r > 0 and math.isfinite(lat)
            )
            stations.append(
                {
                    "service": st.service,
                    "cluster": st.cluster,
                    "rps": num(st.rps),
                    "mean_latency_ms": num(st.own_latency_ms),
                    "samples": samples,
                }
            )
        rtt = [
            {"from": a, "to": b, "ms": num(r.ms), "source": r.source}
            for (a, b), r in sorted(self.rtt.items())
        ]
        return {
            "at": _rfc3339(self.at),
            "window_s": self.window_s,
            "newest_sample_at": None
            if self.newest_sample_at is None
            else _rfc3339(self.newest_sample_at),
            "ingress": [
                {"to": e, "cluster": c, "rps": num(v)} for (e, c), v in sorted(self.ingress.items())
            ],
            "stations": stations,
            "routes": [r.to_json() for _, r in sorted(self.routes.items())],
            "rtt_ms": rtt,
            "bytes_kb": [
                {
                    "from_service": b.from_service,
                    "to": b.to,
                    "request_kb": num(b.request_kb),
                    "response_kb": num(b.response_kb),
                }
                for _, b in sorted(self.bytes_per_call.items())
            ],
            "problems": list(self.problems),
        }

    def rtt_ms(self, a: str, b: str) -> float | None:
        """RTT between two clusters (0 for a cluster to itself; None when unmeasured)."""
        if a == b:
            return 0.0
        r = self.rtt.get((a, b))
        return None if r is None else r.ms


class TelemetrySource(Protocol):
    """Where observations come from (a Prometheus, or the simulator's in-memory store)."""

    def observe(self, policy: PolicyView, at: datetime | None = None) -> Observation:
        """Observe the mesh for `policy` (a TrafficPolicy / PolicyView) at `at` (default: now).

        Raises TelemetryUnavailable when the backend cannot be reached; everything else that is
        wrong with the data is reported in `Observation.problems`."""
        ...


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc(at: datetime | None) -> datetime:
    """`at` as an aware UTC datetime (naive values are taken as UTC); now when None."""
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)
