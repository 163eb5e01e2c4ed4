"""Istio metrics -> Observation: the queries slate runs for a policy, and the one parser of their
answers, shared by every backend (Prometheus over HTTP, the simulator's in-memory store).

`Observer(backend).observe(policy, at)` runs the queries of `policy_queries` (listed in
docs/telemetry.md) and builds the Observation. Everything wrong with the *data* is reported in
`Observation.problems`; only an unreachable backend raises (`TelemetryUnavailable`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from slate.telemetry.observation import (
    INGRESS,
    BytesPerCall,
    Observation,
    ObservedRoute,
    PolicyView,
    Rtt,
    RttSource,
    StationObservation,
    utc,
)
from slate.telemetry.queries import Backend, Matcher, Query, QueryFailed, SeriesResult

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
REQUEST_BYTES = "istio_request_bytes"
RESPONSE_BYTES = "istio_response_bytes"

SRC_SVC = "source_canonical_service"
SRC_CLUSTER = "source_cluster"
DST_SVC = "destination_service_name"
DST_NS = "destination_service_namespace"
DST_CLUSTER = "destination_cluster"

DISAGREE_TOLERANCE = 0.25
"""Source- and destination-reported rates into a station differing by more than this fraction
(with both above MIN_RPS) are reported as a probable partial scrape."""
MIN_RPS = 0.05
"""Rates below this are treated as no traffic when judging agreement and measuring RTT."""

MAX_PROBLEMS = 100
"""Problems listed per Observation; the rest are counted in a last line."""
MAX_LABEL_CHARS = 80
"""Label values (client-controlled strings) are truncated to this in problem messages."""

Grid = npt.NDArray[np.float64]
K = TypeVar("K", bound=Hashable)


def _short(value: str) -> str:
    return value if len(value) <= MAX_LABEL_CHARS else value[: MAX_LABEL_CHARS - 3] + "..."


@dataclass(frozen=True)
class PolicyQueries:
    """The queries of one observation; `range_names` are run over the lookback grid."""

    queries: tuple[Query, ...]
    range_names: frozenset[str]


def policy_queries(policy: PolicyView, lookback_s: float) -> PolicyQueries:
    w = float(policy.window_s)
    ep = policy.endpoint_label
    ns = Matcher(DST_NS, "=", policy.namespace)
    src = Matcher("reporter", "=", "source")
    dst = Matcher("reporter", "=", "destination")

    def rate(name: str, metric: str, rep: Matcher, by: tuple[str, ...]) -> Query:
        return Query(name, "rate", metric, (rep, ns), by, w)

    qs = (
        rate("inbound", REQUESTS, dst, (DST_SVC, DST_CLUSTER, ep)),
        rate("calls", REQUESTS, src, (SRC_SVC, SRC_CLUSTER, DST_SVC, ep, DST_CLUSTER)),
        rate("dur_sum", f"{DURATION}_sum", dst, (DST_SVC, DST_CLUSTER, ep)),
        rate("dur_count", f"{DURATION}_count", dst, (DST_SVC, DST_CLUSTER, ep)),
        rate("out_sum", f"{DURATION}_sum", src, (SRC_SVC, SRC_CLUSTER, DST_SVC, ep)),
        rate("rtt_src_sum", f"{DURATION}_sum", src, (SRC_CLUSTER, DST_CLUSTER)),
        rate("rtt_src_count", f"{DURATION}_count", src, (SRC_CLUSTER, DST_CLUSTER)),
        rate("rtt_dst_sum", f"{DURATION}_sum", dst, (SRC_CLUSTER, DST_CLUSTER)),
        rate("rtt_dst_count", f"{DURATION}_count", dst, (SRC_CLUSTER, DST_CLUSTER)),
        rate("req_bytes_sum", f"{REQUEST_BYTES}_sum", src, (SRC_SVC, DST_SVC, ep)),
        rate("req_bytes_count", f"{REQUEST_BYTES}_count", src, (SRC_SVC, DST_SVC, ep)),
        rate("resp_bytes_sum", f"{RESPONSE_BYTES}_sum", src, (SRC_SVC, DST_SVC, ep)),
        rate("resp_bytes_count", f"{RESPONSE_BYTES}_count", src, (SRC_SVC, DST_SVC, ep)),
        Query("resets", "resets", REQUESTS, (ns,), ("reporter", DST_SVC, DST_CLUSTER), lookback_s),
        Query("newest", "newest", REQUESTS, (ns,)),
    )
    ranged = frozenset({"inbound", "calls", "dur_sum", "dur_count", "out_sum"})
    return PolicyQueries(qs, ranged)


def _endpoint_map(policy: PolicyView) -> tuple[dict[str, dict[str, str]], list[str]]:
    """service -> {label value -> endpoint id}; a service without listed endpoints maps every
    value (and absence) to its bare name, marked by the key "*"."""
    out: dict[str, dict[str, str]] = {}
    ids: list[str] = []
    for s in policy.services:
        if s.endpoints:
            out[s.name] = {e.name: f"{s.name}.{e.name}" for e in s.endpoints}
            ids += [f"{s.name}.{e.name}" for e in s.endpoints]
        else:
            out[s.name] = {"*": s.name}
            ids.append(s.name)
    return out, ids


class _Ctx:
    """Per-observation state: the grid, the endpoint map, and the problems found so far."""

    def __init__(self, policy: PolicyView, grid: Grid, step: float) -> None:
        self.policy = policy
        self.grid = grid
        self.step = step
        self.endpoints, self.endpoint_ids = _endpoint_map(policy)
        self.services = set(self.endpoints)
        self.clusters = [c.name for c in policy.clusters]
        self.problems: list[str] = []
        self._seen: set[str] = set()
        self.dropped = 0
        self._unknown: set[tuple[str, str]] = set()

    def problem(self, msg: str) -> None:
        if msg in self._seen:
            return
        self._seen.add(msg)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(msg)
        else:
            self.dropped += 1

    def finish(self) -> tuple[str, ...]:
        tail = [f"... and {self.dropped} more problem(s)"] if self.dropped else []
        return (*self.problems, *tail)

    def endpoint_id(self, service: str, label: str) -> str | None:
        m = self.endpoints[service]
        if "*" in m:
            return m["*"]
        eid = m.get(label)
        if eid is None and label == "" and len(m) == 1:
            return next(iter(m.values()))
        if eid is None and (service, label) not in self._unknown:
            self._unknown.add((service, label))
            what = (
                f"{self.policy.endpoint_label}={_short(label)!r}" if label else "no endpoint label"
            )
            self.problem(
                f"calls to {service} with {what}: not an endpoint class of the policy; ignored"
            )
        return eid


def _nan_add(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Sum where either has a value (like PromQL's sum over series): NaN only where both are."""
    na, nb = np.isnan(a), np.isnan(b)
    return np.where(na, b, np.where(nb, a, a + b))


def _grouped(
    ctx: _Ctx, rows: list[SeriesResult], keys: list[K | None]
) -> dict[K, npt.NDArray[np.float64]]:
    """The series of `rows` on the grid, summed per key (None: left out), with `_nan_add`'s
    meaning (NaN only where no series of the key has a point), in one numpy pass: the per-series
    align-and-add was most of an observation's time at 10 clusters x 100 services."""
    order: dict[K, int] = {}
    gids: list[int] = []
    kept: list[SeriesResult] = []
    for r, k in zip(rows, keys, strict=True):
        if k is None:
            continue
        gids.append(order.setdefault(k, len(order)))
        kept.append(r)
    if not kept:
        return {}
    n = len(ctx.grid)
    lens = np.fromiter((len(r.times) for r in kept), dtype=np.int64, count=len(kept))
    times = np.concatenate([r.times for r in kept])
    values = np.concatenate([r.values for r in kept])
    group = np.repeat(np.asarray(gids, dtype=np.int64), lens)
    idx = np.rint((times - ctx.grid[0]) / ctx.step).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    flat = group[ok] * n + idx[ok]
    size = len(order) * n
    total = np.bincount(flat, weights=values[ok], minlength=size)
    seen = np.bincount(flat, minlength=size) > 0
    total[~seen] = np.nan
    table = total.reshape(len(order), n)
    return {k: table[i] for k, i in order.items()}


def _ratio(num: float, den: float) -> float | None:
    if not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
        return None
    return num / den


def _tup(a: npt.NDArray[np.float64]) -> tuple[float, ...]:
    return tuple(a.tolist())


class Observer:
    """Runs the policy's queries on a backend and parses the answers into an Observation.

    `lookback_s`: span of the history series (default 30 min, closed-loop.md); `step_s`: spacing
    of the history grid (default 30 s). Implements `TelemetrySource`."""

    def __init__(self, backend: Backend, lookback_s: float = 1800.0, step_s: float = 30.0) -> None:
        if step_s <= 0 or lookback_s < 0:
            raise ValueError("step_s must be > 0 and lookback_s >= 0")
        self.backend = backend
        self.lookback_s = lookback_s
        self.step_s = step_s

    def observe(self, policy: PolicyView, at: datetime | None = None) -> Observation:
        when = utc(at)
        end = round(when.timestamp(), 3)
        n = math.floor(self.lookback_s / self.step_s + 1e-9) + 1
        grid = np.round(end - self.step_s * np.arange(n - 1, -1, -1), 3)
        pq = policy_queries(policy, self.lookback_s)
        ctx = _Ctx(policy, grid, self.step_s)
        answers: dict[str, list[SeriesResult]] = {}
        for q in pq.queries:
            try:
                if q.name in pq.range_names:
                    res = self.backend.range(q, float(grid[0]), end, self.step_s)
                else:
                    res = self.backend.instant(q, end)
            except QueryFailed as e:
                ctx.problem(f"query {q.name} failed ({e}): {q.promql()}")
                res = []
            answers[q.name] = _clean(ctx, q, res, required=q.name in {"inbound", "calls"})
        return _build(ctx, policy, when, self, answers)


def _clean(ctx: _Ctx, q: Query, res: list[SeriesResult], required: bool) -> list[SeriesResult]:
    """Drop NaN/Inf points (reported), and report an empty answer to a query that must have one."""
    if not res and required:
        ctx.problem(f"no series for {q.name}: {q.promql()}")
    bad = 0
    out: list[SeriesResult] = []
    for r in res:
        ok = np.isfinite(r.values)
        if not ok.all():
            bad += int((~ok).sum())
            r = SeriesResult(r.labels, r.times[ok], r.values[ok])
        if len(r.times):
            out.append(r)
    if bad:
        ctx.problem(f"{bad} NaN/Inf value(s) in the answer to {q.name} ignored: {q.promql()}")
    return out


def _instant(res: Iterable[SeriesResult], *labels: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for r in res:
        out[tuple(r.labels.get(k, "") for k in labels)] += float(r.values[-1])
    return out


def _build(
    ctx: _Ctx,
    policy: PolicyView,
    when: datetime,
    obs: Observer,
    a: Mapping[str, list[SeriesResult]],
) -> Observation:
    ep_label = policy.endpoint_label
    nan = np.full(len(ctx.grid), np.nan)

    # inbound per station and endpoint (destination-reported)
    in_keys: list[tuple[str, str, str] | None] = []
    for r in a["inbound"]:
        svc, c = r.labels.get(DST_SVC, ""), r.labels.get(DST_CLUSTER, "")
        eid = ctx.endpoint_id(svc, r.labels.get(ep_label, "")) if svc in ctx.services else None
        in_keys.append(None if eid is None else (svc, c, eid))
    inbound: dict[tuple[str, str], dict[str, npt.NDArray[np.float64]]] = defaultdict(dict)
    for (svc, c, eid), got in _grouped(ctx, a["inbound"], in_keys).items():
        inbound[(svc, c)][eid] = got

    # calls (source-reported), per (from, from cluster, to endpoint, to cluster)
    call_keys: list[tuple[str, str, str, str] | None] = []
    for r in a["calls"]:
        dsvc = r.labels.get(DST_SVC, "")
        eid = ctx.endpoint_id(dsvc, r.labels.get(ep_label, "")) if dsvc in ctx.services else None
        if eid is None:
            call_keys.append(None)
            continue
        ssvc = r.labels.get(SRC_SVC, "")
        frm = ssvc if ssvc in ctx.services else INGRESS
        call_keys.append((frm, r.labels.get(SRC_CLUSTER, ""), eid, r.labels.get(DST_CLUSTER, "")))
    calls = _grouped(ctx, a["calls"], call_keys)

    def by_station(
        name: str, svc_l: str, c_l: str
    ) -> dict[tuple[str, str], npt.NDArray[np.float64]]:
        rows = a[name]
        return _grouped(ctx, rows, [(r.labels.get(svc_l, ""), r.labels.get(c_l, "")) for r in rows])

    dur_sum = by_station("dur_sum", DST_SVC, DST_CLUSTER)
    dur_count = by_station("dur_count", DST_SVC, DST_CLUSTER)
    out_sum = by_station("out_sum", SRC_SVC, SRC_CLUSTER)

    # Inclusive latency per endpoint class (the destination-reported durations carry the class).
    class_sum: dict[tuple[str, str], dict[str, npt.NDArray[np.float64]]] = defaultdict(dict)
    class_count: dict[tuple[str, str], dict[str, npt.NDArray[np.float64]]] = defaultdict(dict)
    for name, into_ in (("dur_sum", class_sum), ("dur_count", class_count)):
        keys: list[tuple[str, str, str] | None] = []
        for r in a[name]:
            svc, c = r.labels.get(DST_SVC, ""), r.labels.get(DST_CLUSTER, "")
            eid = ctx.endpoint_id(svc, r.labels.get(ep_label, "")) if svc in ctx.services else None
            keys.append(None if eid is None else (svc, c, eid))
        for (svc, c, eid), got in _grouped(ctx, a[name], keys).items():
            into_[(svc, c)][eid] = got

    # the calls again, summed per ingress (endpoint, cluster) and per caller station
    call_rows = a["calls"]
    ingress_s = _grouped(
        ctx,
        call_rows,
        [(k[2], k[1]) if k is not None and k[0] == INGRESS else None for k in call_keys],
    )
    out_by: dict[tuple[str, str], dict[str, npt.NDArray[np.float64]]] = defaultdict(dict)
    outbound_g = _grouped(
        ctx,
        call_rows,
        [(k[0], k[1], k[2]) if k is not None and k[0] != INGRESS else None for k in call_keys],
    )
    for (frm, fc, eid), got in outbound_g.items():
        out_by[(frm, fc)][eid] = got
    outbound = out_by

    # Mean source-reported duration of one call per (caller station, destination endpoint): with
    # the learned calls per request, it splits a caller's outbound time between its classes.
    out_keys: list[tuple[str, str, str] | None] = []
    for r in a["out_sum"]:
        dsvc, ssvc = r.labels.get(DST_SVC, ""), r.labels.get(SRC_SVC, "")
        eid = ctx.endpoint_id(dsvc, r.labels.get(ep_label, "")) if dsvc in ctx.services else None
        if eid is None or ssvc not in ctx.services:
            out_keys.append(None)
        else:
            out_keys.append((ssvc, r.labels.get(SRC_CLUSTER, ""), eid))
    out_ms: dict[tuple[str, str], dict[str, npt.NDArray[np.float64]]] = defaultdict(dict)
    for (frm, fc, eid), got in _grouped(ctx, a["out_sum"], out_keys).items():
        n_calls = outbound.get((frm, fc), {}).get(eid)
        if n_calls is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                out_ms[(frm, fc)][eid] = np.where(n_calls > 0, got / n_calls, np.nan)
    into: dict[tuple[str, str], float] = defaultdict(float)  # source-reported rps into a station
    for (_frm, _fc, eid, tc), cs in calls.items():
        last = cs[-1]
        if last == last:
            into[(eid.split(".", 1)[0], tc)] += float(last)

    stations: dict[tuple[str, str], StationObservation] = {}
    for key in sorted(set(inbound) | set(dur_count)):
        svc, c = key
        if svc not in ctx.services:
            continue
        series = inbound.get(key, {})
        total = nan.copy()
        for s in series.values():
            total = _nan_add(total, s)
        cnt = dur_count.get(key, nan)
        dsum = dur_sum.get(key, nan)
        osum = out_sum.get(key)
        calls_out = any(bool((s > 0).any()) for s in outbound.get(key, {}).values())
        if osum is None:
            if calls_out:
                ctx.problem(f"{svc}@{_short(c)} makes calls but its outbound durations are missing")
            osum = np.where(np.isnan(cnt), np.nan, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            lat = np.where(cnt > 0, dsum / cnt, np.nan)
            out_pr = np.where(cnt > 0, np.nan_to_num(osum) / cnt, np.nan)
            own = lat - out_pr
        rps_now = {e: float(np.nan_to_num(s[-1])) for e, s in series.items()}
        lat_now = float(lat[-1]) if np.isfinite(lat[-1]) else None
        out_now = float(out_pr[-1]) if np.isfinite(out_pr[-1]) else None
        own_now = float(own[-1]) if np.isfinite(own[-1]) else None
        if own_now is not None and own_now < 0:
            ctx.problem(
                f"{svc}@{_short(c)}: own latency {own_now:.3g} ms < 0 "
                "(outbound durations exceed inbound)"
            )
        if series and all(np.isnan(s[-1]) for s in series.values()) and np.any(~np.isnan(total)):
            last_i = int(np.max(np.nonzero(~np.isnan(total))[0]))
            ctx.problem(
                f"{svc}@{_short(c)}: no destination-reported data at the evaluation time "
                f"(last at {_iso(float(ctx.grid[last_i]))}): partial scrape or station gone"
            )
        by_class: dict[str, tuple[float, ...]] = {}
        for eid, cs in class_count.get(key, {}).items():
            with np.errstate(invalid="ignore", divide="ignore"):
                ls = np.where(cs > 0, class_sum.get(key, {}).get(eid, nan) / cs, np.nan)
            by_class[eid] = _tup(ls)
        stations[key] = StationObservation(
            service=svc,
            cluster=c,
            rps=sum(rps_now.values()),
            rps_by_endpoint=rps_now,
            latency_ms=lat_now,
            outbound_ms_per_request=out_now,
            own_latency_ms=own_now,
            rps_series={e: _tup(s) for e, s in sorted(series.items())},
            own_latency_series=_tup(own),
            outbound_series={e: _tup(s) for e, s in sorted(outbound.get(key, {}).items())},
            outbound_ms_series={e: _tup(s) for e, s in sorted(out_ms.get(key, {}).items())},
            latency_series_by_endpoint=dict(sorted(by_class.items())),
        )

    # partial scrapes: the two reporters of the same calls disagree now
    for sk in sorted(set(into) | {k for k, st in stations.items() if st.rps > 0}):
        src_r = into.get(sk, 0.0)
        dst_r = stations[sk].rps if sk in stations else 0.0
        if max(src_r, dst_r) < MIN_RPS:
            continue
        if abs(src_r - dst_r) > DISAGREE_TOLERANCE * max(src_r, dst_r):
            ctx.problem(
                f"{sk[0]}@{_short(sk[1])}: source-reported {src_r:.3g} rps vs destination-reported "
                f"{dst_r:.3g} rps (partial scrape or unmeshed callers?)"
            )

    for name in sorted(ctx.services):
        if not any(k[0] == name and st.rps > 0 for k, st in stations.items()):
            ctx.problem(f"no traffic observed for service {name} (istio_requests_total)")

    # now values of calls; observed splits
    calls_now = {k: float(v[-1]) for k, v in calls.items() if np.isfinite(v[-1])}
    per_route: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for (frm, fc, eid, tc), v in calls_now.items():
        per_route[(frm, fc, eid)][tc] = per_route[(frm, fc, eid)].get(tc, 0.0) + v
    routes: dict[tuple[str, str, str], ObservedRoute] = {}
    for rk, w in sorted(per_route.items()):
        tot = sum(w.values())
        if tot > 0:
            routes[rk] = ObservedRoute(rk[0], rk[1], rk[2], tot, {c: v / tot for c, v in w.items()})
    ingress_now = {k: float(np.nan_to_num(v[-1])) for k, v in ingress_s.items()}

    bytes_pc = _bytes(ctx, a)
    rtt = _rtt(ctx, policy, a)
    _resets_problems(ctx, a)

    newest: datetime | None = None
    if a["newest"]:
        newest = datetime.fromtimestamp(float(a["newest"][0].values[-1]), UTC)
        age = (when - newest).total_seconds()
        if age > policy.window_s:
            ctx.problem(f"newest sample is {age:.0f} s old (window {policy.window_s:.0f} s)")
    else:
        ctx.problem("no samples of istio_requests_total in the last 5 minutes")

    return Observation(
        policy=f"{policy.namespace}/{policy.name}",
        at=when,
        window_s=float(policy.window_s),
        lookback_s=obs.lookback_s,
        step_s=obs.step_s,
        times=_tup(ctx.grid),
        newest_sample_at=newest,
        endpoints=tuple(ctx.endpoint_ids),
        ingress=ingress_now,
        ingress_series={k: _tup(v) for k, v in sorted(ingress_s.items())},
        stations=stations,
        calls=calls_now,
        routes=routes,
        bytes_per_call=bytes_pc,
        rtt=rtt,
        problems=ctx.finish(),
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bytes(ctx: _Ctx, a: Mapping[str, list[SeriesResult]]) -> dict[tuple[str, str], BytesPerCall]:
    ep = ctx.policy.endpoint_label
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for i, name in enumerate(
        ("req_bytes_sum", "req_bytes_count", "resp_bytes_sum", "resp_bytes_count")
    ):
        for r in a[name]:
            dsvc = r.labels.get(DST_SVC, "")
            if dsvc not in ctx.services:
                continue
            eid = ctx.endpoint_id(dsvc, r.labels.get(ep, ""))
            if eid is None:
                continue
            ssvc = r.labels.get(SRC_SVC, "")
            frm = ssvc if ssvc in ctx.services else INGRESS
            acc[(frm, eid)][i] += float(r.values[-1])
    out: dict[tuple[str, str], BytesPerCall] = {}
    for (frm, eid), (qs, qc, ps, pc) in sorted(acc.items()):
        req, resp = _ratio(qs, qc), _ratio(ps, pc)
        if req is None or resp is None:
            if qc > 0 or pc > 0:
                ctx.problem(f"bytes of calls {frm} -> {eid}: request or response sizes missing")
            continue
        out[(frm, eid)] = BytesPerCall(frm, eid, req / 1000.0, resp / 1000.0)
    return out


def _rtt(
    ctx: _Ctx, policy: PolicyView, a: Mapping[str, list[SeriesResult]]
) -> dict[tuple[str, str], Rtt]:
    given: dict[frozenset[str], float] = {}
    for (x, y), v in policy.rtt_ms.items():
        given.setdefault(frozenset((x, y)), float(v))
    ss = _instant(a["rtt_src_sum"], SRC_CLUSTER, DST_CLUSTER)
    sc = _instant(a["rtt_src_count"], SRC_CLUSTER, DST_CLUSTER)
    ds = _instant(a["rtt_dst_sum"], SRC_CLUSTER, DST_CLUSTER)
    dc = _instant(a["rtt_dst_count"], SRC_CLUSTER, DST_CLUSTER)
    out: dict[tuple[str, str], Rtt] = {}
    cl = ctx.clusters
    for i, x in enumerate(cl):
        for y in cl[i + 1 :]:
            pair = frozenset((x, y))
            ms: float | None
            source: RttSource
            if pair in given:
                ms, source = given[pair], "policy"
            else:
                dirs = [(x, y), (y, x)]
                s_sum = sum(ss.get(d, 0.0) for d in dirs)
                s_cnt = sum(sc.get(d, 0.0) for d in dirs)
                d_sum = sum(ds.get(d, 0.0) for d in dirs)
                d_cnt = sum(dc.get(d, 0.0) for d in dirs)
                if s_cnt >= MIN_RPS and d_cnt >= MIN_RPS:
                    ms = s_sum / s_cnt - d_sum / d_cnt
                    source = "measured"
                    if ms < 0:
                        ctx.problem(f"measured RTT {x}<->{y} is {ms:.3g} ms < 0; taken as 0")
                        ms = 0.0
                else:
                    ms, source = None, "unmeasured"
            out[(x, y)] = Rtt(x, y, ms, source)
            out[(y, x)] = Rtt(y, x, ms, source)
    return out


def _resets_problems(ctx: _Ctx, a: Mapping[str, list[SeriesResult]]) -> None:
    for r in a["resets"]:
        n = float(r.values[-1])
        if n > 0:
            svc, c = r.labels.get(DST_SVC, ""), r.labels.get(DST_CLUSTER, "")
            rep = r.labels.get("reporter", "")
            ctx.problem(
                f"{int(n)} counter reset(s) in the lookback on istio_requests_total to "
                f"{_short(svc)}@{_short(c)} (reporter={_short(rep)}; a pod restarted?): "
                "rate() corrects them"
            )
