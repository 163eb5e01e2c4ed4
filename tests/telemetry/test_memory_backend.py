"""MemoryBackend: Prometheus's rate()/resets()/timestamp() semantics, grouping, and the query
values' PromQL."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slate.telemetry.memory import MemoryBackend, label_key
from slate.telemetry.queries import (
    Matcher,
    Query,
    SeriesResult,
    from_prometheus_json,
    to_prometheus_json,
)


def reference_rate(
    samples: list[tuple[float, float]], start: float, end: float, window: float
) -> float | None:
    """Prometheus 2.x extrapolatedRate, written out per sample as promql/functions.go does it."""
    pts = [(t, v) for t, v in samples if start <= t <= end]
    if len(pts) < 2:
        return None
    result = pts[-1][1] - pts[0][1]
    last = 0.0
    for _, v in pts:
        if v < last:
            result += last
        last = v
    to_start = pts[0][0] - start
    to_end = end - pts[-1][0]
    sampled = pts[-1][0] - pts[0][0]
    avg = sampled / (len(pts) - 1)
    if result > 0 and pts[0][1] >= 0:
        to_zero = sampled * (pts[0][1] / result)
        to_start = min(to_start, to_zero)
    thr = avg * 1.1
    ext = (
        sampled + (to_start if to_start < thr else avg / 2) + (to_end if to_end < thr else avg / 2)
    )
    return result * (ext / sampled) / window


Q = Query("q", "rate", "m_total", (Matcher("job", "=", "a"),), ("svc",), 60.0)


def test_rate_of_a_steady_counter_is_its_slope() -> None:
    store = MemoryBackend()
    for i in range(40):
        store.append(
            1000.0 + 15 * i, "m_total", [label_key({"job": "a", "svc": "x"})], [500 + 10.0 * 15 * i]
        )
    (r,) = store.instant(Q, 1000.0 + 15 * 39)
    assert r.labels == {"svc": "x"}
    assert r.values[0] == pytest.approx(10.0, rel=1e-12)


def test_rate_matches_prometheus_reference_with_resets_and_gaps() -> None:
    rng = np.random.default_rng(7)
    store = MemoryBackend()
    n_series, n_scrapes = 30, 80
    truth: dict[int, list[tuple[float, float]]] = {j: [] for j in range(n_series)}
    values = rng.uniform(0, 1000, n_series)
    t = 5000.0
    for _ in range(n_scrapes):
        t += rng.uniform(9, 21)
        values += rng.poisson(50, n_series)
        reset = rng.random(n_series) < 0.03
        values[reset] = rng.uniform(0, 5, reset.sum())
        present = rng.random(n_series) > 0.15  # partial scrapes
        keys = [
            label_key({"job": "a", "svc": f"s{j % 3}", "pod": f"p{j}"}) for j in range(n_series)
        ]
        store.append(
            t, "m_total", [k for k, p in zip(keys, present, strict=True) if p], values[present]
        )
        for j in np.nonzero(present)[0]:
            truth[int(j)].append((round(t, 3), float(values[j])))
    checked = 0
    for at_np in np.linspace(5100, t, 25):
        at = round(float(at_np), 3)
        got = {r.labels["svc"]: float(r.values[0]) for r in store.instant(Q, at)}
        want: dict[str, float] = {}
        for series_no, pts in truth.items():
            ref = reference_rate(pts, at - 60.0, at, 60.0)
            if ref is not None:
                svc = f"s{series_no % 3}"
                want[svc] = want.get(svc, 0.0) + ref
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9)
            checked += 1
    assert checked > 30


def test_fewer_than_two_samples_is_absent_and_grouping_sums_pods_away() -> None:
    store = MemoryBackend()
    a = label_key({"job": "a", "svc": "x", "pod": "x-0"})
    b = label_key({"job": "a", "svc": "x", "pod": "x-1"})
    c = label_key({"job": "b", "svc": "x", "pod": "x-2"})  # another job: not selected
    store.append(100.0, "m_total", [a, c], [0.0, 0.0])
    store.append(115.0, "m_total", [a, b, c], [150.0, 0.0, 999.0])
    store.append(130.0, "m_total", [a, b, c], [300.0, 300.0, 9999.0])
    (r,) = store.instant(Q, 130.0)
    ra = reference_rate([(100, 0), (115, 150), (130, 300)], 70, 130, 60)
    rb = reference_rate([(115, 0), (130, 300)], 70, 130, 60)
    assert ra is not None and rb is not None
    assert r.values[0] == pytest.approx(ra + rb, rel=1e-12)
    assert store.instant(Q, 100.0) == []  # one sample each: no rate


def test_range_query_grid_resets_and_newest() -> None:
    store = MemoryBackend()
    k = label_key({"job": "a", "svc": "x"})
    vals = [0, 100, 200, 50, 150, 250, 20, 120]
    for i, v in enumerate(vals):
        store.append(1000.0 + 10 * i, "m_total", [k], [float(v)])
    res = store.range(Q, 1030.0, 1070.0, 10.0)
    assert len(res) == 1
    assert list(res[0].times) == [1030.0, 1040.0, 1050.0, 1060.0, 1070.0]
    resets = Query("r", "resets", "m_total", (Matcher("job", "=", "a"),), ("svc",), 1000.0)
    (r,) = store.instant(resets, 1070.0)
    assert r.values[0] == 2
    newest = Query("n", "newest", "m_total", (Matcher("job", "=", "a"),))
    (n,) = store.instant(newest, 1075.0)
    assert n.values[0] == 1070.0
    assert store.instant(newest, 1070.0 + 301) == []  # older than the 5 min lookback delta


def test_promql_rendering_and_json_round_trip() -> None:
    q = Query(
        "calls",
        "rate",
        "istio_requests_total",
        (Matcher("reporter", "=", "source"), Matcher("destination_service_namespace", "=", 'a"b')),
        ("source_cluster", "destination_cluster"),
        120.0,
    )
    assert q.promql() == (
        'sum by (source_cluster, destination_cluster) (rate(istio_requests_total{reporter="source",'
        'destination_service_namespace="a\\"b"}[120s]))'
    )
    assert Query("n", "newest", "m", (Matcher("a", "=~", "x|y"),)).promql() == (
        'max(timestamp(m{a=~"x|y"}))'
    )
    res = [SeriesResult({"a": "1"}, np.array([1.0, 2.0]), np.array([0.5, math.nan]))]
    back = from_prometheus_json(to_prometheus_json(res, matrix=True))
    assert back[0].labels == {"a": "1"}
    assert back[0].values[0] == 0.5 and math.isnan(back[0].values[1])
    inst = from_prometheus_json([{"metric": {}, "value": [3.0, "+Inf"]}])
    assert inst[0].values[0] == math.inf


def test_cached_answers_equal_fresh_ones_as_samples_and_series_arrive() -> None:
    rng = np.random.default_rng(3)
    asked, fresh = MemoryBackend(), MemoryBackend()
    values = np.zeros(12)
    keys = [label_key({"job": "a", "svc": f"s{j % 4}", "pod": f"p{j}"}) for j in range(12)]
    t = 1000.0
    for i in range(60):
        t += 15
        values += rng.poisson(30, 12)
        n = 6 if i < 30 else 12  # half the series appear later (new groups too: s2, s3 late)
        for store in (asked, fresh):
            store.append(t, "m_total", keys[:n], values[:n])
        if i % 7 == 0:  # ask now, and about a time whose samples have not arrived yet
            asked.range(Q, t - 300, t + 60, 15)
            asked.instant(Q, t + 30)
    got = asked.range(Q, t - 600, t, 15)
    want = fresh.range(Q, t - 600, t, 15)
    assert [r.labels for r in got] == [r.labels for r in want]
    for a, b in zip(got, want, strict=True):
        assert list(a.times) == list(b.times)
        assert np.allclose(a.values, b.values, rtol=1e-12)
