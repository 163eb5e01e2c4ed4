"""Against a real Prometheus (the distribution's package): history backfilled with promtool from
the simulator, the newest samples scraped live from the simulator's exporter.

Tolerances: on backfilled history the Observation from Prometheus equals the MemoryBackend's to
1e-9 (same samples, same rate() semantics); at the newest sample it matches the MemoryBackend's
(which recorded the live scrapes at collection time, ms from Prometheus's timestamps) within 1%, and
the simulated truth as in test_observe.py (rates within 4 Poisson sd / 3%, splits 0.03, RTT 1 ms,
bytes 1%, own latency 5% or 4 sd)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from policy_stub import policy_for
from prometheus_harness import PrometheusProcess, SimulatedPrometheus, backfill
from simdata import optimal_routing, scenario

from slate.model.routing import INGRESS
from slate.sim.istio_metrics import IstioMetrics, write_openmetrics
from slate.telemetry.memory import MemoryBackend
from slate.telemetry.observation import Observation, TelemetryUnavailable
from slate.telemetry.observe import Observer
from slate.telemetry.prometheus import prometheus_source

pytestmark = pytest.mark.integration

LOOKBACK_S = 15 * 60


def rel_tol(rps: float, window_s: float = 120.0) -> float:
    return max(0.03, 4.0 / math.sqrt(max(rps * window_s, 1.0)))


def nan_series(history_end: float) -> str:
    """A namespace whose counters are NaN: its rate() answers are NaN."""
    labels = (
        'reporter="destination",destination_service_name="frontend",'
        'destination_service_namespace="broken",destination_cluster="us-west",slate_endpoint="home"'
    )
    lines = ["# TYPE istio_requests_total unknown"]
    lines += [
        f"istio_requests_total{{{labels}}} NaN {history_end - 5 * i:.3f}" for i in range(30, -1, -1)
    ]
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def live(prometheus_factory: Callable[..., SimulatedPrometheus]) -> SimulatedPrometheus:
    sc = scenario("boutique-2r")
    sp = prometheus_factory(sc, optimal_routing(sc), extra_openmetrics=nan_series)
    sp.wait_for_live_scrapes(2)
    return sp


def observe(url_or_store: str | MemoryBackend, at: datetime, **policy: object) -> Observation:
    pol = policy_for(scenario("boutique-2r"), **policy)  # type: ignore[arg-type]
    if isinstance(url_or_store, str):
        return prometheus_source(url_or_store, lookback_s=LOOKBACK_S).observe(pol, at)
    return Observer(url_or_store, lookback_s=LOOKBACK_S).observe(pol, at)


def assert_same(a: Observation, b: Observation, rel: float) -> None:
    assert a.times == b.times
    assert a.problems == b.problems
    assert a.ingress.keys() == b.ingress.keys()
    for k, v in a.ingress.items():
        assert b.ingress[k] == pytest.approx(v, rel=rel)
    assert a.stations.keys() == b.stations.keys()
    for k, s in a.stations.items():
        o = b.stations[k]
        assert o.rps == pytest.approx(s.rps, rel=rel)
        assert o.own_latency_ms == pytest.approx(s.own_latency_ms, rel=rel)
        for e, series in s.rps_series.items():
            assert o.rps_series[e] == pytest.approx(series, rel=rel, nan_ok=True)
        for e, series in s.outbound_series.items():
            assert o.outbound_series[e] == pytest.approx(series, rel=rel, nan_ok=True)
        assert o.outbound_ms_series.keys() == s.outbound_ms_series.keys()
        for e, series in s.outbound_ms_series.items():
            assert o.outbound_ms_series[e] == pytest.approx(series, rel=rel, nan_ok=True)
        assert o.latency_series_by_endpoint.keys() == s.latency_series_by_endpoint.keys()
        for e, series in s.latency_series_by_endpoint.items():
            assert o.latency_series_by_endpoint[e] == pytest.approx(series, rel=rel, nan_ok=True)
    assert a.routes.keys() == b.routes.keys()
    for rk, r in a.routes.items():
        for c, w in r.weights.items():
            assert b.routes[rk].weights[c] == pytest.approx(w, rel=rel, abs=1e-6)
    for pair, x in a.rtt.items():
        assert b.rtt[pair].source == x.source
        assert b.rtt[pair].ms == pytest.approx(x.ms, rel=rel)
    for bk, bpc in a.bytes_per_call.items():
        assert b.bytes_per_call[bk].request_kb == pytest.approx(bpc.request_kb, rel=rel)
        assert b.bytes_per_call[bk].response_kb == pytest.approx(bpc.response_kb, rel=rel)


def test_prometheus_equals_memory_backend_on_backfilled_history(live: SimulatedPrometheus) -> None:
    at = datetime.fromtimestamp(live.history_end - 30.0, UTC)
    real = observe(live.url, at)
    mem = observe(live.store, at)
    assert real.problems == ()
    assert len(real.stations) == 22
    assert_same(mem, real, rel=1e-9)


def test_prometheus_at_the_newest_sample_matches_memory_and_truth(
    live: SimulatedPrometheus,
) -> None:
    newest = live.wait_for_live_scrapes(2)
    # half a second after the newest scrape: the store stamped it at collection time, a few ms
    # after Prometheus's scrape time, so both hold it
    at = datetime.fromtimestamp(newest + 0.5, UTC)
    real = observe(live.url, at)
    assert real.problems == ()
    assert real.staleness_s == pytest.approx(0.5, abs=0.01)
    assert_same(observe(live.store, at), real, rel=0.01)
    sc = live.gen.scenario
    for d in sc.ingress:
        for c, rps in d.rps.items():
            assert real.ingress[(d.endpoint, c)] == pytest.approx(rps, rel=rel_tol(rps))
            bpc = real.bytes_per_call[(INGRESS, d.endpoint)]
            assert bpc.request_kb == pytest.approx(d.request_kb, rel=0.01)
    from slate.evaluate import evaluate

    ev = evaluate(sc, live.gen.routing, live.gen.latency)
    for st in ev.stations:
        if st.rps > 0:
            o = real.stations[(st.service, st.cluster)]
            assert o.rps == pytest.approx(st.rps, rel=rel_tol(st.rps))
            own = st.work_ms_per_s / st.rps + st.wait_ms
            assert o.own_latency_ms == pytest.approx(own, rel=max(0.05, rel_tol(st.rps)), abs=0.15)
    per_key: dict[tuple[str, str, str], dict[str, float]] = {}
    for (fs, fc, to, tc), rps in ev.call_rps.items():
        per_key.setdefault((fs, fc, to), {})[tc] = rps
    for key, w in per_key.items():
        tot = sum(w.values())
        for c, rps in w.items():
            assert real.routes[key].weights.get(c, 0.0) == pytest.approx(rps / tot, abs=0.03)
    a, b = sc.topology.clusters
    assert real.rtt[(a, b)].source == "measured"
    assert real.rtt[(a, b)].ms == pytest.approx(sc.topology.rtt(a, b), abs=1.0)


def test_nan_and_empty_answers_are_reported_not_raised(live: SimulatedPrometheus) -> None:
    at = datetime.fromtimestamp(live.history_end, UTC)
    broken = observe(live.url, at, namespace="broken")
    assert any("NaN" in p for p in broken.problems), broken.problems
    assert not broken.has_data
    empty = observe(live.url, at, namespace="nothing-here")
    assert any(p.startswith("no series for inbound") for p in empty.problems)
    assert not empty.has_data and empty.newest_sample_at is None


def test_stopped_prometheus_is_telemetry_unavailable(tmp_path: Path) -> None:
    prom = PrometheusProcess(tmp_path, targets=[])
    prom.start()
    try:
        ok = observe(prom.url, datetime.now(UTC))
        assert not ok.has_data
    finally:
        prom.stop()
    with pytest.raises(TelemetryUnavailable, match="unreachable"):
        observe(prom.url, datetime.now(UTC))
    prom.start()  # the same data and port again: it answers again
    try:
        assert not observe(prom.url, datetime.now(UTC)).has_data
    finally:
        prom.stop()


def test_openmetrics_with_histogram_buckets_loads_and_answers_quantiles(tmp_path: Path) -> None:
    sc = scenario("boutique-2r")
    gen = IstioMetrics(sc, optimal_routing(sc), namespace="shop", buckets=True, pods_per_station=2)
    store = MemoryBackend()
    end = round(datetime.now(UTC).timestamp() - 60, 3)
    gen.run(store, end - 300, end, 15)
    written = write_openmetrics(store, tmp_path / "h.txt")
    text = (tmp_path / "h.txt").read_text()
    assert "# TYPE istio_request_duration_milliseconds histogram" in text
    assert text.endswith("# EOF\n") and written > 10_000
    prom = PrometheusProcess(tmp_path, targets=[])
    backfill(tmp_path / "h.txt", prom.data_dir)
    prom.start()
    try:
        q = (
            "histogram_quantile(0.5, sum by (le) (rate(istio_request_duration_milliseconds_bucket"
            '{reporter="destination",destination_service_name="currency"}[2m])))'
        )
        (res,) = prom.query(q, at=end)
        median = float(res["value"][1])
        mean = observe(prom.url, datetime.fromtimestamp(end, UTC)).stations
        own = mean[("currency", "us-west")].latency_ms
        assert own is not None and 0.2 * own < median < 2 * own  # exponential: median = 0.69 mean
    finally:
        prom.stop()
