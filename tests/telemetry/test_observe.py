"""Observation from simulated telemetry (MemoryBackend) against the simulated truth.

Tolerances (40 min of 15 s scrapes, 2 min rate window, no demand drift unless said): rates within
4 Poisson standard deviations of the window's count (`rel_tol`: 7.7% at 22.7 rps, 3% floor), splits
within 0.03, measured RTT within 1 ms, bytes per call within 1%, own latency within 5% or
`rel_tol` (its noise has the same Poisson scale) or 0.15 ms of the truth's station time."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from policy_stub import policy_for
from simdata import T0, Sim, optimal_routing, scenario, simulate

from slate.model.routing import INGRESS, Routing
from slate.telemetry.memory import MemoryBackend, label_key
from slate.telemetry.observation import Observation, TelemetryUnavailable
from slate.telemetry.observe import Observer
from slate.telemetry.queries import Query, QueryFailed, SeriesResult


def rel_tol(rps: float, window_s: float = 120.0) -> float:
    """4 standard deviations of a Poisson count over the window, relative; at least 3%."""
    return max(0.03, 4.0 / math.sqrt(max(rps * window_s, 1.0)))


@pytest.fixture(scope="module")
def boutique() -> Sim:
    sc = scenario("boutique-2r")
    return simulate(sc, optimal_routing(sc))


@pytest.fixture(scope="module")
def boutique_obs(boutique: Sim) -> Observation:
    return Observer(boutique.store).observe(policy_for(boutique.scenario), boutique.at)


def test_demand_rates_latency_match_the_truth(boutique: Sim, boutique_obs: Observation) -> None:
    obs, sc = boutique_obs, boutique.scenario
    assert obs.problems == ()
    for d in sc.ingress:
        for c, rps in d.rps.items():
            assert obs.ingress[(d.endpoint, c)] == pytest.approx(rps, rel=rel_tol(rps))
    ev = boutique.truth()
    for st in ev.stations:
        if st.rps <= 0:
            continue
        o = obs.stations[(st.service, st.cluster)]
        assert o.rps == pytest.approx(st.rps, rel=rel_tol(st.rps))
        own = st.work_ms_per_s / st.rps + st.wait_ms
        assert o.own_latency_ms == pytest.approx(own, rel=max(0.05, rel_tol(st.rps)), abs=0.15), st
        assert sum(o.rps_by_endpoint.values()) == pytest.approx(o.rps)


def test_splits_rtt_and_bytes_match_the_truth(boutique: Sim, boutique_obs: Observation) -> None:
    obs, sc = boutique_obs, boutique.scenario
    ev = boutique.truth()
    per_key: dict[tuple[str, str, str], dict[str, float]] = {}
    for (fs, fc, to, tc), rps in ev.call_rps.items():
        per_key.setdefault((fs, fc, to), {})[tc] = rps
    crossing = 0
    for key, w in per_key.items():
        tot = sum(w.values())
        if tot < 1:
            continue
        route = obs.routes[key]
        assert route.rps == pytest.approx(tot, rel=rel_tol(tot))
        for c, rps in w.items():
            assert route.weights.get(c, 0.0) == pytest.approx(rps / tot, abs=0.03)
        crossing += any(c != key[1] for c in w)
    assert crossing > 0, "the optimum should send something across clusters"
    (a, b) = sc.topology.clusters
    assert obs.rtt[(a, b)].source == "measured"
    assert obs.rtt[(a, b)].ms == pytest.approx(sc.topology.rtt(a, b), abs=1.0)
    assert obs.rtt_ms(b, a) == obs.rtt_ms(a, b) and obs.rtt_ms(a, a) == 0.0
    for d in sc.ingress:
        bpc = obs.bytes_per_call[(INGRESS, d.endpoint)]
        assert (bpc.request_kb, bpc.response_kb) == pytest.approx(
            (d.request_kb, d.response_kb), rel=0.01
        )
    for e in sc.app.endpoints.values():
        for call in e.calls:
            bpc = obs.bytes_per_call[(e.service, call.to)]
            assert bpc.request_kb == pytest.approx(call.request_kb, rel=0.01)
            assert bpc.response_kb == pytest.approx(call.response_kb, rel=0.01)


def test_series_are_aligned_on_one_grid(boutique: Sim, boutique_obs: Observation) -> None:
    obs = boutique_obs
    assert len(obs.times) == 61 and obs.times[-1] == boutique.end
    assert np.allclose(np.diff(obs.times), 30.0)
    assert obs.newest_sample_at == boutique.at and obs.staleness_s == 0.0
    for st in obs.stations.values():
        assert len(st.own_latency_series) == len(obs.times)
        for s in (*st.rps_series.values(), *st.outbound_series.values()):
            assert len(s) == len(obs.times)
    # the call graph is in the series: frontend calls currency.convert 4x per home request, and
    # 1x per product request (and nothing else of frontend calls it)
    fe = obs.stations[("frontend", "us-east")]
    home = np.array(fe.rps_series["frontend.home"])
    product = np.array(fe.rps_series["frontend.product"])
    conv = np.array(fe.outbound_series["currency.convert"])
    ok = ~np.isnan(home + product + conv)
    assert ok.sum() > 50
    sc = boutique.scenario
    mult = {
        e.name: sum(c.per_request for c in e.calls if c.to == "currency.convert")
        for e in sc.app.service("frontend").endpoints
    }
    want = mult["home"] * home + mult["product"] * product
    if "checkout" in mult:
        want += mult["checkout"] * np.array(fe.rps_series["frontend.checkout"])
    assert np.allclose(conv[ok], want[ok], rtol=0.03)


def test_rtt_from_the_policy_and_unmeasured_pairs() -> None:
    sc = scenario("hotel-3r")
    local = Routing(())  # every call stays in its cluster: no RTT can be measured
    sim = simulate(sc, local, minutes=10)
    obs = Observer(sim.store, lookback_s=300).observe(policy_for(sc), sim.at)
    crossing = {frozenset((k[1], k[3])) for k, v in sim.truth().call_rps.items() if v > 0}
    unmeasured = 0
    for (a, b), r in obs.rtt.items():
        if frozenset((a, b)) in crossing:  # a service missing from a cluster: calls cross
            assert r.source == "measured"
            assert r.ms == pytest.approx(sc.topology.rtt(a, b), abs=1.0)
        else:
            assert r.source == "unmeasured" and r.ms is None
            unmeasured += 1
    assert unmeasured > 0
    given = Observer(sim.store, lookback_s=300).observe(policy_for(sc, rtt_given=True), sim.at)
    a, b = sc.topology.clusters[:2]
    assert given.rtt[(b, a)].source == "policy"
    assert given.rtt[(b, a)].ms == sc.topology.rtt(a, b)


def test_distorted_truth_is_slower_than_mmc_and_seen_so() -> None:
    sc = scenario("boutique-2r")
    r = optimal_routing(sc)
    mmc = simulate(sc, r, minutes=10)
    dis = simulate(sc, r, minutes=10, truth="distorted")
    pol = policy_for(sc)
    o1 = Observer(mmc.store, lookback_s=300).observe(pol, mmc.at)
    o2 = Observer(dis.store, lookback_s=300).observe(pol, dis.at)
    ev = dis.truth()
    busiest = max((s for s in ev.stations if s.rps > 0), key=lambda s: s.utilization)
    key = (busiest.service, busiest.cluster)
    own1, own2 = o1.stations[key].own_latency_ms, o2.stations[key].own_latency_ms
    assert own1 is not None and own2 is not None and own2 > own1 * 1.05
    want = busiest.work_ms_per_s / busiest.rps + busiest.wait_ms
    assert own2 == pytest.approx(want, rel=max(0.05, rel_tol(busiest.rps)))


def test_pods_are_summed_away(boutique: Sim) -> None:
    sim3 = simulate(boutique.scenario, boutique.routing, minutes=10, pods=3, seed=5)
    series = sim3.store.series("istio_requests_total")
    assert any(labels["pod"].endswith("-2") for labels, _ in series)
    obs3 = Observer(sim3.store, lookback_s=300).observe(policy_for(sim3.scenario), sim3.at)
    assert obs3.problems == ()
    for st in sim3.truth().stations:
        if st.rps > 0:
            got = obs3.stations[(st.service, st.cluster)].rps
            assert got == pytest.approx(st.rps, rel=rel_tol(st.rps))


def test_a_service_listed_without_endpoints_is_one_class(boutique: Sim) -> None:
    pol = policy_for(boutique.scenario, bare=frozenset({"cart"}))
    obs = Observer(boutique.store).observe(pol, boutique.at)
    assert obs.problems == ()
    assert "cart" in obs.endpoints and "cart.get" not in obs.endpoints
    st = obs.stations[("cart", "us-west")]
    assert list(st.rps_by_endpoint) == ["cart"]
    assert ("frontend", "us-west", "cart", "us-west") in obs.calls


def test_unknown_endpoint_labels_are_reported(boutique: Sim) -> None:
    pol = policy_for(boutique.scenario)
    object.__setattr__(pol, "endpoint_label", "no_such_label")
    obs = Observer(boutique.store, lookback_s=120).observe(pol, boutique.at)
    assert any("no endpoint label" in p for p in obs.problems)
    for (svc, _), st in obs.stations.items():
        n_classes = len(boutique.scenario.app.service(svc).endpoints)
        # absent label = the service's only class; a multi-class service cannot be attributed
        assert bool(st.rps_by_endpoint) == (n_classes == 1)


def test_counter_reset_is_reported_and_corrected() -> None:
    sc = scenario("boutique-2r")
    r = optimal_routing(sc)
    sim = simulate(sc, r, minutes=10)
    sim.gen.reset_counters("cart", "us-west")
    sim.gen.run(sim.store, sim.end + 15, sim.end + 150, 15)
    at = sim.at + timedelta(seconds=150)
    obs = Observer(sim.store, lookback_s=600).observe(policy_for(sc), at)
    assert any("counter reset" in p and "cart@us-west" in p for p in obs.problems)
    truth = {(s.service, s.cluster): s.rps for s in sim.truth().stations}
    assert obs.stations[("cart", "us-west")].rps == pytest.approx(
        truth[("cart", "us-west")], rel=0.05
    )


def test_partial_scrapes_are_reported_not_raised() -> None:
    sc = scenario("boutique-2r")
    r = optimal_routing(sc)
    sim = simulate(sc, r, minutes=10)
    # the last two minutes: a third of the series missing from every scrape
    sim.gen.run(sim.store, sim.end + 15, sim.end + 120, 15, drop=0.34)
    obs = Observer(sim.store, lookback_s=600).observe(
        policy_for(sc), sim.at + timedelta(seconds=120)
    )
    assert any("partial scrape" in p for p in obs.problems), obs.problems


class _Canned:
    """A backend with fixed answers: NaN, empty, refused, or unreachable."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def _answer(self, q: Query, times: Sequence[float]) -> list[SeriesResult]:
        if self.mode == "down":
            raise TelemetryUnavailable("connection refused")
        if self.mode == "refuse":
            raise QueryFailed("HTTP 400: bad_data")
        if self.mode == "empty":
            return []
        labels = {"destination_service_name": "frontend", "destination_cluster": "us-west"}
        labels.update({"slate_endpoint": "home", "source_cluster": "us-west"})
        labels.update({"source_canonical_service": "gw", "reporter": "destination"})
        t = np.array(times, dtype=float)
        return [SeriesResult(labels, t, np.full(len(t), math.nan))]

    def instant(self, query: Query, at: float) -> list[SeriesResult]:
        return self._answer(query, [at])

    def range(self, query: Query, start: float, end: float, step: float) -> list[SeriesResult]:
        return self._answer(query, list(np.arange(start, end + step / 2, step)))


@pytest.mark.parametrize("mode", ["nan", "empty", "refuse"])
def test_bad_answers_are_problems_not_exceptions(mode: str) -> None:
    pol = policy_for(scenario("boutique-2r"))
    obs = Observer(_Canned(mode), lookback_s=300).observe(pol, None)
    assert not obs.has_data
    want = {"nan": "NaN", "empty": "no series", "refuse": "failed"}[mode]
    assert any(want in p for p in obs.problems), obs.problems
    assert all(r.source == "unmeasured" for r in obs.rtt.values())


def test_unreachable_backend_raises_telemetry_unavailable() -> None:
    pol = policy_for(scenario("boutique-2r"))
    with pytest.raises(TelemetryUnavailable):
        Observer(_Canned("down")).observe(pol)


def test_observation_is_immutable(boutique_obs: Observation) -> None:
    with pytest.raises(AttributeError):
        boutique_obs.at = boutique_obs.at  # type: ignore[misc]
    with pytest.raises(TypeError):
        boutique_obs.ingress[("x", "y")] = 1.0  # type: ignore[index]
    assert boutique_obs.at.timestamp() > T0


def test_problems_are_bounded_and_label_values_truncated(boutique: Sim) -> None:
    store = MemoryBackend()
    keys = [
        label_key(
            {
                "reporter": "destination",
                "destination_service_name": "frontend",
                "destination_service_namespace": "shop",
                "destination_cluster": "us-west",
                "slate_endpoint": f"{i:03d}" + "x" * 500,
            }
        )
        for i in range(300)
    ]
    store.append(T0, "istio_requests_total", keys, [0.0] * 300)
    store.append(T0 + 15, "istio_requests_total", keys, [15.0] * 300)
    obs = Observer(store, lookback_s=60).observe(
        policy_for(boutique.scenario), datetime.fromtimestamp(T0 + 15, UTC)
    )
    assert len(obs.problems) == 101
    assert obs.problems[-1].startswith("... and ")
    assert max(len(p) for p in obs.problems) < 300


def test_json_has_the_observe_contract_fields(boutique_obs: Observation) -> None:
    doc = json.loads(json.dumps(boutique_obs.to_json()))
    assert doc["at"].endswith("Z") and doc["window_s"] == 120.0
    assert {"to", "cluster", "rps"} <= set(doc["ingress"][0])
    st = doc["stations"][0]
    assert {"service", "cluster", "rps", "mean_latency_ms", "samples"} <= set(st)
    assert st["samples"] == 61
    assert set(doc["routes"][0]) == {"from_service", "from_cluster", "to", "weights"}
    assert {r["source"] for r in doc["rtt_ms"]} == {"measured"}
    assert set(doc["bytes_kb"][0]) == {"from_service", "to", "request_kb", "response_kb"}
    assert doc["problems"] == []


def test_series_are_summed_per_key_on_the_grid_with_promql_nan_meaning() -> None:
    """_grouped: points land on the grid by time (off-grid ones dropped), series with the same key
    add up, a grid point is NaN only where none of a key's series has a point, None keys are left
    out."""
    from slate.telemetry.observe import _Ctx, _grouped
    from slate.telemetry.queries import SeriesResult

    grid = np.array([100.0, 130.0, 160.0, 190.0])
    ctx = _Ctx(policy_for(scenario()), grid, 30.0)

    def series(times: list[float], values: list[float]) -> SeriesResult:
        return SeriesResult({}, np.array(times), np.array(values))

    rows = [
        series([100.0, 130.0], [1.0, 2.0]),
        series([130.0, 160.0, 400.0], [10.0, 20.0, 99.0]),  # 400 s is off the grid
        series([190.0], [5.0]),
        series([100.0, 190.0], [7.0, 7.0]),
    ]
    got = _grouped(ctx, rows, ["a", "a", "b", None])
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["a"], [1.0, 12.0, 20.0, np.nan])
    np.testing.assert_array_equal(got["b"], [np.nan, np.nan, np.nan, 5.0])
    assert _grouped(ctx, rows, [None] * 4) == {}
