"""A station's own time per endpoint class, from the telemetry alone: its class durations less the
time of the calls each class makes (learned calls per request x measured time per call)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import cast

import numpy as np

from slate.control.learned import _class_own_series
from slate.telemetry.observation import Observation, StationObservation

N = 4


def _obs(
    durations: dict[str, list[float]],
    rps: dict[str, list[float]],
    calls: dict[str, list[float]],
    per_call_ms: dict[str, list[float]],
) -> Observation:
    st = StationObservation(
        service="cart",
        cluster="a",
        rps=sum(v[-1] for v in rps.values()),
        rps_by_endpoint={e: v[-1] for e, v in rps.items()},
        latency_ms=None,
        outbound_ms_per_request=None,
        own_latency_ms=None,
        rps_series={e: tuple(v) for e, v in rps.items()},
        own_latency_series=(math.nan,) * N,
        outbound_series={d: tuple(v) for d, v in calls.items()},
        latency_series_by_endpoint={e: tuple(v) for e, v in durations.items()},
        outbound_ms_series={d: tuple(v) for d, v in per_call_ms.items()},
    )
    return cast(Observation, SimpleNamespace(stations={("cart", "a"): st}, times=(0.0,) * N))


EIDS = ["cart.get", "cart.list"]
RPS = {"cart.get": [10.0, 20.0, 30.0, 40.0], "cart.list": [5.0, 5.0, 5.0, 5.0]}


def test_each_class_loses_the_time_of_its_own_calls() -> None:
    # get makes 2 calls to db.find (5 ms each, 6 ms in the last sample), list makes none.
    obs = _obs(
        {"cart.get": [13.0, 13.0, 13.0, 15.0], "cart.list": [4.0, 4.0, 4.0, math.nan]},
        RPS,
        {"db.find": [20.0, 40.0, 60.0, 80.0]},
        {"db.find": [5.0, 5.0, 5.0, 6.0]},
    )
    own = _class_own_series(obs, "cart", "a", EIDS, {"cart.get": {"db.find": 2.0}})
    assert own is not None
    np.testing.assert_allclose(own[:, 0], [3.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(own[:3, 1], [4.0, 4.0, 4.0])
    assert math.isnan(own[3, 1])  # a class that served nothing stays unknown


def test_classes_whose_calls_were_pooled_share_their_rate_weighted_mean() -> None:
    """Calls attributed in proportion to rates (the classes' rates moved together) cannot say
    which class makes them: the classes get one series, right in total."""
    obs = _obs(
        {"cart.get": [13.0] * N, "cart.list": [4.0] * N},
        {"cart.get": [10.0] * N, "cart.list": [30.0] * N},
        {"db.find": [40.0] * N},
        {"db.find": [5.0] * N},
    )
    per = {"cart.get": {"db.find": 1.0}, "cart.list": {"db.find": 1.0}}
    own = _class_own_series(obs, "cart", "a", EIDS, per, {"cart.get", "cart.list"})
    assert own is not None
    # (10 * (13 - 5) + 30 * (4 - 5)) / 40 = 1.25, for both
    np.testing.assert_allclose(own, np.full((N, 2), 1.25))


def test_no_class_series_without_the_time_per_call_of_every_destination() -> None:
    obs = _obs(
        {"cart.get": [13.0] * N, "cart.list": [4.0] * N},
        RPS,
        {"db.find": [20.0] * N, "db.get": [1.0] * N},
        {"db.find": [5.0] * N},  # db.get's time per call missing (older telemetry)
    )
    assert _class_own_series(obs, "cart", "a", EIDS, {"cart.get": {"db.find": 2.0}}) is None


def test_no_class_series_without_class_durations() -> None:
    assert _class_own_series(_obs({}, RPS, {}, {}), "cart", "a", EIDS, {}) is None
