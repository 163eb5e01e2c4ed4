"""The simulator's Istio metrics carry the endpoint class on the destination-reported durations,
and the Observation built from them (the same parsing as Prometheus) gives each class's own mean
latency: what lets the loop learn boutique's productcatalog classes (list 2.0 ms, get 0.8 ms)
apart although their rates move together."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from slate.model.scenario_file import load_scenario
from slate.sim.closed_loop import START, make_loop

ROOT = Path(__file__).resolve().parents[2]


def test_observation_carries_each_class_latency_of_the_truth() -> None:
    sc = load_scenario(ROOT / "examples/scenarios/boutique-2r.yaml")
    _mesh, _store, loop = make_loop(sc)
    obs = loop.source.observe(loop.policy, datetime.fromtimestamp(START.timestamp(), UTC))
    catalog = sc.app.service("productcatalog")
    for cluster in catalog.clusters:
        st = obs.stations[("productcatalog", cluster)]
        assert set(st.latency_series_by_endpoint) == {"productcatalog.list", "productcatalog.get"}
        # The truth now: service time + the station's queueing wait (the same for both classes).
        lat = {}
        for eid in st.latency_series_by_endpoint:
            series = np.array(st.latency_series_by_endpoint[eid])
            lat[eid] = float(np.nanmedian(series[np.isfinite(series)]))
            assert math.isfinite(lat[eid])
        diff = lat["productcatalog.list"] - lat["productcatalog.get"]
        assert diff == pytest.approx(2.0 - 0.8, abs=0.25), (cluster, lat)
        # The station's own latency is the rate-weighted mix of its classes.
        x = {e: st.rps_by_endpoint[e] for e in lat}
        mix = sum(x[e] * st.latency_series_by_endpoint[e][-1] for e in lat) / sum(x.values())
        assert st.own_latency_ms == pytest.approx(mix, rel=1e-6)


def test_observation_carries_the_time_per_call_of_each_destination() -> None:
    """`outbound_ms_series[d]` is the mean source-reported time of one call to d: weighted by the
    calls, it adds up to the station's outbound time per request, and a call costs at least the
    callee's own destination-reported time."""
    sc = load_scenario(ROOT / "examples/scenarios/boutique-2r.yaml")
    _mesh, _store, loop = make_loop(sc)
    obs = loop.source.observe(loop.policy, datetime.fromtimestamp(START.timestamp(), UTC))
    callers = [st for st in obs.stations.values() if st.outbound_series]
    assert callers
    for st in callers:
        assert set(st.outbound_ms_series) == set(st.outbound_series)
        total = sum(
            st.outbound_series[d][-1] * st.outbound_ms_series[d][-1] for d in st.outbound_series
        )
        assert st.outbound_ms_per_request is not None
        assert total / st.rps == pytest.approx(st.outbound_ms_per_request, rel=1e-6), st.key
        for d, series in st.outbound_ms_series.items():
            callee = [
                o.latency_series_by_endpoint[d][-1]
                for o in obs.stations.values()
                if d in o.latency_series_by_endpoint
            ]
            assert series[-1] >= 0.99 * min(callee), (st.key, d)
