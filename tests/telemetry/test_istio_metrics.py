"""The simulator's Istio metrics: counter shapes, the truth's station curves, demand controls and
the OpenMetrics text."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
from simdata import T0, optimal_routing, scenario

from slate.sim.istio_metrics import (
    DistortedStation,
    IstioMetrics,
    truth_latency_model,
    write_openmetrics,
)
from slate.telemetry.memory import MemoryBackend


def test_counters_are_monotone_and_both_reporters_count_the_same_calls() -> None:
    sc = scenario("boutique-2r")
    gen = IstioMetrics(sc, optimal_routing(sc), namespace="shop", buckets=True, pods_per_station=2)
    scrapes = [gen.scrape(T0 + 15 * i) for i in range(20)]
    for name, (_, first) in scrapes[0].items():
        assert not first.any(), name  # the first scrape only sets the clock
        values = np.array([s[name][1] for s in scrapes[1:]])
        assert (np.diff(values, axis=0) >= 0).all(), name
    keys, counts = scrapes[-1]["istio_requests_total"]
    by_rep: dict[str, dict[tuple[str, ...], float]] = {"source": {}, "destination": {}}
    for key, v in zip(keys, counts, strict=True):
        d = dict(key)
        call = tuple(
            d[k]
            for k in (
                "source_canonical_service",
                "source_cluster",
                "destination_service_name",
                "slate_endpoint",
                "destination_cluster",
            )
        )
        side = by_rep[d["reporter"]]
        side[call] = side.get(call, 0.0) + v
    assert by_rep["source"] == by_rep["destination"]
    assert sum(by_rep["source"].values()) > 0
    # histogram buckets: cumulative, and the +Inf bucket is the count
    bkeys, buckets = scrapes[-1]["istio_request_duration_milliseconds_bucket"]
    ckeys, cvals = scrapes[-1]["istio_request_duration_milliseconds_count"]
    count = {k: v for k, v in zip(ckeys, cvals, strict=True)}
    per_series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for key, v in zip(bkeys, buckets, strict=True):
        d = dict(key)
        le = math.inf if d["le"] == "+Inf" else float(d["le"])
        base = tuple(sorted((k, x) for k, x in d.items() if k != "le"))
        per_series.setdefault(base, []).append((le, v))
    for base, pts in per_series.items():
        pts.sort()
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(pts))
        assert pts[-1][1] == count[base]


def test_distorted_truth_is_convex_increasing_with_a_true_slope() -> None:
    st = DistortedStation(3)
    works = np.linspace(0, 0.97 * st.capacity, 60)
    cost = np.array([st.queue_cost(w) for w in works])
    assert (np.diff(cost) > 0).all()
    assert (np.diff(cost, 2) > -1e-9).all()
    for w in (100.0, 1500.0, 2800.0):
        h = 1e-3
        numeric = (st.queue_cost(w + h) - st.queue_cost(w - h)) / (2 * h)
        assert st.queue_slope(w) == pytest.approx(numeric, rel=1e-5)
    assert st.queue_cost(st.capacity) == math.inf
    sc = scenario("boutique-2r")
    mmc, dis = truth_latency_model(sc, "mmc"), truth_latency_model(sc, "distorted")
    s_m, s_d = mmc.station("frontend", "us-west"), dis.station("frontend", "us-west")
    assert s_d.queue_cost(1000.0) > s_m.queue_cost(1000.0)
    with pytest.raises(ValueError, match="truth"):
        truth_latency_model(sc, "linear")  # type: ignore[arg-type]


def test_demand_drifts_a_little_and_steps_on_request() -> None:
    sc = scenario("boutique-2r")
    gen = IstioMetrics(sc, optimal_routing(sc), seed=3, drift=0.02)
    ratios = []
    for i in range(200):
        gen.scrape(T0 + 15 * i)
        ratios.append(gen.demand() / gen.nominal)
    r = np.array(ratios)
    assert r.min() > 0.8 and r.max() < 1.25
    assert r.std() > 0.01  # it does move
    gen.scale_demand("us-east", 1.3)
    east = [i for i, (_, c) in enumerate(gen._comp) if c == "us-east"]
    assert np.allclose(gen.nominal_demand()[east], gen.nominal[east] * 1.3)
    judged = gen.demand_scenario()
    assert judged.total_rps == pytest.approx(gen.nominal_demand().sum())


def test_openmetrics_text_groups_families_and_ends_with_eof() -> None:
    sc = scenario("boutique-2r")
    gen = IstioMetrics(sc, optimal_routing(sc), namespace="shop", buckets=False)
    store = MemoryBackend()
    gen.run(store, T0, T0 + 60, 15)
    out = io.StringIO()
    n = write_openmetrics(store, out, {"job": "sim", "instance": 'a"b'})
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[-1] == "# EOF"
    types = [ln for ln in lines if ln.startswith("# TYPE")]
    assert types == [
        "# TYPE istio_requests counter",
        "# TYPE istio_request_bytes histogram",
        "# TYPE istio_request_duration_milliseconds histogram",
        "# TYPE istio_response_bytes histogram",
    ]
    samples = [ln for ln in lines if not ln.startswith("#")]
    assert len(samples) == n
    assert all('instance="a\\"b"' in ln and 'job="sim"' in ln for ln in samples)
    # without stored buckets, each histogram gets its +Inf bucket (= the count)
    assert any(ln.startswith("istio_request_bytes_bucket{") and 'le="+Inf"' in ln for ln in samples)
    # one family's samples are contiguous
    fam_of = [ln.split("{")[0].removesuffix("_total") for ln in samples]
    fam_of = [
        f.rsplit("_", 1)[0] if f.endswith(("_sum", "_count", "_bucket")) else f for f in fam_of
    ]
    changes = sum(1 for a, b in itertools.pairwise(fam_of) if a != b)
    assert changes == 3
