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
