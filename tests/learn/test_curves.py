"""Station curves and service times learned from synthetic samples with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slate.learn.curves import (
    RHO_SATURATED,
    SERVERS,
    FittedStation,
    _quantile,
    _queue_shapes,
    _queue_shapes_interpolated,
    fit_class_service_times,
    fit_service_times,
    fit_station,
    fit_stations,
    queue_shape,
)
from slate.model.latency import MMcStation


def _samples(
    truth: MMcStation, service_ms: float, loads: np.ndarray, noise: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rps = loads / service_ms
    wait = np.array([truth.queue_cost(w) for w in loads]) / rps
    wait = wait * (1 + noise * rng.standard_normal(len(loads)))
    return loads, rps, wait


@pytest.mark.parametrize("replicas", [1, 2, 4, 8])
def test_mmc_truth_is_learned_within_the_measured_range(replicas: int) -> None:
    truth = MMcStation(replicas)
    loads = np.linspace(0.2, 0.88, 30) * truth.capacity
    w, r, q = _samples(truth, 5.0, loads, 0.03)
    fit = fit_station(w, r, q)
    assert fit is not None
    assert fit.valid_up_to == pytest.approx(loads.max())
    for rho in (0.4, 0.6, 0.8, 0.88):
        x = rho * truth.capacity
        assert fit.queue_cost(x) == pytest.approx(truth.queue_cost(x), rel=0.15, abs=0.02 * x)
    # The pole is not far from the truth's (it is only ever used a bounded step past the data).
    assert 0.9 * truth.capacity < fit.capacity < 1.2 * truth.capacity


def test_distorted_truth_shape_is_learned() -> None:
    """Service time rising with utilisation (1 + rho^2) on top of M/M/2 queueing."""
    truth = MMcStation(2)
    s0 = 4.0
    loads = np.linspace(0.1, 0.85, 25) * truth.capacity
    rho = loads / truth.capacity
    rps = loads / s0
    latency = s0 * (1 + rho**2) + np.array([truth.queue_cost(w) for w in loads]) / rps
    fit = fit_station(loads, rps, latency - s0)
    assert fit is not None
    for i in range(0, 25, 3):
        want = rps[i] * (latency[i] - s0)
        got = fit.queue_cost(float(loads[i]))
        # The station's whole cost (work + queueing), what the optimizer weighs, within 5%; the
        # queueing part alone within 12% where it matters (past half load).
        assert loads[i] + got == pytest.approx(loads[i] + want, rel=0.05)
        if rho[i] >= 0.5:
            assert got == pytest.approx(want, rel=0.12)


def test_curve_is_convex_increasing_and_a_hashable_value() -> None:
    fit = FittedStation(capacity=1000.0, a=800.0, c=2, b=50.0, valid_up_to=700.0)
    xs = np.linspace(0, 990, 100)
    q = np.array([fit.queue_cost(x) for x in xs])
    assert np.all(np.diff(q) > 0)
    assert np.all(np.diff(q, 2) > -1e-9)
    for x in (1.0, 300.0, 800.0):
        h = 1e-4
        num = (fit.queue_cost(x + h) - fit.queue_cost(x - h)) / (2 * h)
        assert fit.queue_slope(x) == pytest.approx(num, rel=1e-4)
    assert math.isinf(fit.queue_cost(1000.0))
    same = FittedStation(1000.0, 800.0, 2, 50.0, 700.0)
    assert fit == same and hash(fit) == hash(same)
    assert FittedStation.from_json(fit.to_json()) == fit


def test_no_queueing_seen_gives_a_far_pole_and_no_samples_gives_none() -> None:
    fit = fit_station(np.array([100.0, 120.0]), np.array([20.0, 24.0]), np.array([0.0, 0.0]))
    assert fit is not None and fit.capacity >= 1200.0
    assert fit.queue_cost(120.0) < 0.1 * 120.0
    assert fit_station(np.array([0.0]), np.array([0.0]), np.array([1.0])) is None


@pytest.mark.parametrize("threads_from", [0, 10**6], ids=["threads", "one-thread"])
def test_stations_fitted_together_get_what_each_gets_alone(
    threads_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit_stations batches stations with the same number of samples and fits batches in
    threads on a large mesh: each station's figures must be bit for bit its own fit's, in order,
    whatever its neighbours (other sample counts, nothing usable, never queued, NaN samples)."""
    import slate.learn.curves as curves

    monkeypatch.setattr(curves, "THREADS_FROM", threads_from)
    monkeypatch.setattr(curves, "FIT_THREADS", 2)
    stations = []
    for k in range(40):
        truth = MMcStation((1, 2, 4, 8)[k % 4])
        n = (30, 30, 12)[k % 3]
        loads = np.linspace(0.1 + 0.01 * k, 0.9, n) * truth.capacity
        w, r, q = _samples(truth, 2.0 + k % 5, loads, 0.05, seed=k)
        if k == 7:
            q = np.zeros_like(q)  # never queued: a far pole
        if k == 11:
            w = np.zeros_like(w)  # nothing carried load: None
        if k == 13:
            q[3] = np.nan  # one sample dropped: a group of its own
        stations.append((w, r, q, None if k % 2 else q + 1.0))
    together = fit_stations(stations)
    alone = [fit_station(*s) for s in stations]
    assert together[11] is None and alone[11] is None
    assert together[7] is not None and together[7].capacity == 10 * together[7].valid_up_to
    assert together[13] is not None and together[13].samples == 29
    for a, b in zip(alone, together, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.to_json() == b.to_json()
            assert a.r2 == b.r2 or (math.isnan(a.r2) and math.isnan(b.r2))
    assert len({f.rmse_ms for f in together if f is not None}) > 30  # all different stations


def test_service_times_from_the_low_load_intercept() -> None:
    rng = np.random.default_rng(3)
    true = {"home": 3.0, "product": 2.5, "checkout": 8.0}
    rows, lat = [], []
    for _ in range(60):
        mix = rng.dirichlet([2, 2, 2]) * rng.uniform(20, 200)
        rows.append(mix)
        own = mix @ np.array(list(true.values())) / mix.sum()
        lat.append(own * (1 + 0.02 * rng.standard_normal()))
    got = fit_service_times(np.array(rows), np.array(lat), list(true))
    for name, s in true.items():
        assert got[name] == pytest.approx(s, rel=0.1)


def test_service_times_of_endpoints_that_move_together_are_not_split() -> None:
    base = np.linspace(10, 100, 20)
    rows = np.column_stack([base, 2 * base])
    lat = np.full(20, 5.0)
    got = fit_service_times(rows, lat, ["a", "b"])
    assert got == {"a": pytest.approx(5.0), "b": pytest.approx(5.0)}


def test_classes_that_move_together_are_separated_by_their_own_durations() -> None:
    """boutique's productcatalog: list (2.0 ms) and get (0.8 ms) in lockstep. The mix cannot
    tell them apart; each class's own duration (Istio's histogram carries the class) can."""
    rng = np.random.default_rng(3)
    base = np.linspace(10, 100, 30)
    rows = np.column_stack([base, 2 * base])
    wait = 0.002 * base  # a shared queueing wait, small at low load
    own = np.column_stack([2.0 + wait, 0.8 + wait]) * (1 + 0.02 * rng.standard_normal((30, 2)))
    mixed = fit_service_times(rows, (rows * own).sum(axis=1) / rows.sum(axis=1), ["list", "get"])
    assert mixed["list"] == pytest.approx(mixed["get"])  # one time for both
    got = fit_class_service_times(rows, own, ["list", "get"])
    # (plus the small wait of the lightest samples, as for the mix's intercept)
    assert got["list"] == pytest.approx(2.0, rel=0.1)
    assert got["get"] == pytest.approx(0.8, rel=0.1)
    assert got["list"] - got["get"] == pytest.approx(1.2, rel=0.05)
    # A class never measured on its own is left to the mix.
    own[:, 1] = np.nan
    assert set(fit_class_service_times(rows, own, ["list", "get"])) == {"list"}


def _two_clusters(service_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A leaf station with classes list and get in two clusters: "small" (1 replica, mostly get,
    driven to 95% utilisation) and "big" (8 replicas, mostly list, 27-45%). The small cluster's
    total rate is the lower, so its rows are the lightest by rate."""
    rng = np.random.default_rng(5)
    rows, own, cluster = [], [], []
    for g, (replicas, mix, peak_rps) in enumerate(
        [(1, (0.1, 0.9), 2900.0), (8, (0.8, 0.2), 5000.0)]
    ):
        for t in range(40):
            r = peak_rps * (0.6 + 0.4 * t / 39) * np.array(mix)
            rho = float(r @ service_ms) / (1000.0 * replicas)
            wait = 1000.0 * float(queue_shape(replicas, np.array([rho]))[0]) / float(r.sum())
            rows.append(r)
            own.append((service_ms + wait) * (1 + 0.02 * rng.standard_normal(2)))
            cluster.append(g)
    return np.array(rows), np.array(own), cluster


def test_class_times_are_not_the_queueing_of_the_cluster_a_class_is_served_in() -> None:
    """Every class waits the same in one sample, so within-sample differences are service-time
    differences; the level comes from the least-loaded cluster's lightest samples. Pooling the
    clusters' lightest rows by rate read the busy cluster's queueing as service time (1.67 / 1.01
    ms here, truth 0.92 / 0.26)."""
    truth = np.array([0.92, 0.26])
    rows, own, cluster = _two_clusters(truth)
    got = fit_class_service_times(rows, own, ["list", "get"], row_groups=cluster)
    assert got["list"] == pytest.approx(0.92, rel=0.05)
    assert got["get"] == pytest.approx(0.26, rel=0.1)
    pooled = fit_class_service_times(rows, own, ["list", "get"])  # one group: the old reading
    assert pooled["get"] > 2 * 0.26


def test_class_times_of_classes_never_measured_together() -> None:
    """A class only ever measured alone gets its own lightest level; the others keep theirs."""
    truth = np.array([0.92, 0.26])
    rows, own, cluster = _two_clusters(truth)
    alone = np.linspace(50.0, 100.0, 10)  # ten more samples of the big cluster: export alone
    rows = np.vstack(
        [np.column_stack([rows, np.zeros(80)]), np.column_stack([0 * alone, 0 * alone, alone])]
    )
    own = np.vstack(
        [
            np.column_stack([own, np.full(80, np.nan)]),
            np.column_stack([np.full((10, 2), np.nan), 3.0 + alone / 1000]),
        ]
    )
    got = fit_class_service_times(
        rows, own, ["list", "get", "export"], row_groups=[*cluster, *[1] * 10]
    )
    assert got["export"] == pytest.approx(3.06, abs=0.01)  # its lightest samples' mean
    assert got["list"] == pytest.approx(0.92, rel=0.05)


@pytest.mark.parametrize(("a", "b"), [(0.0, 0.4), (2.5, 0.0), (1.3, 0.7)])
def test_costs_and_slopes_at_many_points_are_queue_cost_and_queue_slope(a: float, b: float) -> None:
    """The optimizer's first tangents come from the batch; they must be the scalar curve's."""
    for c in SERVERS:
        f = FittedStation(capacity=1234.0, a=a, c=c, b=b, valid_up_to=600.0)
        works = [0.0, 1.0, 300.0, 1000.0, 1233.9, 1234.0, 2000.0]
        costs, slopes = f.costs_and_slopes(works)
        for w, q, g in zip(works, costs, slopes, strict=True):
            if w >= f.capacity:
                assert math.isinf(q) and math.isinf(g)
                continue
            assert q == pytest.approx(f.queue_cost(w), rel=1e-13, abs=1e-300)
            assert g == pytest.approx(f.queue_slope(w), rel=1e-13, abs=1e-300)


def test_the_quick_quantile_is_numpys() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 4, 7, 30, 61):
        for scale in (1e-3, 1.0, 1e3):
            v = rng.random(n) * scale
            for q in (0.0, 0.3, 0.5, 0.7, 1.0):
                assert _quantile(v, q) == float(np.quantile(v, q))


def test_the_fits_interpolated_queue_shapes_are_the_exact_ones() -> None:
    rng = np.random.default_rng(1)
    rho = np.concatenate([rng.random((31, 61)).ravel() * RHO_SATURATED, [0.0, RHO_SATURATED]])
    rho = rho.reshape(1, -1)
    exact = _queue_shapes(rho[None])[:, 0]
    got = _queue_shapes_interpolated(rho)[:, 0]
    assert got.shape == exact.shape == (len(SERVERS), rho.shape[1])
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=3e-5)
