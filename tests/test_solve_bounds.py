"""The optimizer's seams for the control loop: station models as values, capacity asked of the
model, per-station work bounds and the inequality block on route weights and rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from slate.model.keys import RouteKey
from slate.model.latency import MMcLatencyModel, MMcStation
from slate.model.scenario import Scenario
from slate.model.scenario_file import scenario_from_dict
from slate.optimizer import formulation
from slate.optimizer import solve as solve_mod
from slate.optimizer.baselines import waterfall_routing
from slate.optimizer.bounds import RateRow, WeightBound
from slate.optimizer.errors import InfeasibleError, SolveError
from slate.optimizer.solve import solve

TOL = 1e-6
NO_BYTES = {"request_kb": 0, "response_kb": 0}
WE = ("west", "east")


def two_sites() -> Scenario:
    doc: dict[str, Any] = {
        "clusters": ["west", "east", "far"],
        "rtt_ms": {"west": {"east": 20, "far": 80}, "east": {"far": 70}},
        "services": {
            "front": {
                "replicas": {"west": 2, "east": 2},
                "endpoints": {
                    "home": {
                        "service_ms": 2,
                        "calls": [
                            {"to": "db.get", "per_request": 1, "request_kb": 1, "response_kb": 1}
                        ],
                    }
                },
            },
            "db": {"replicas": {"west": 1, "east": 1}, "endpoints": {"get": {"service_ms": 1}}},
            # Deployed where nobody calls it from: its keys carry no traffic.
            "idle": {"replicas": {"west": 1, "far": 1}, "endpoints": {"x": {"service_ms": 1}}},
        },
        "ingress": [
            {"endpoint": "front.home", "rps": {"west": 300, "east": 100}, **NO_BYTES},
            {"endpoint": "idle.x", "rps": {"east": 0}, **NO_BYTES},
        ],
    }
    return scenario_from_dict(doc)


def station_work(scenario: Scenario, result: Any) -> dict[tuple[str, str], float]:
    return {(s.service, s.cluster): s.work_ms_per_s for s in result.evaluation.stations}


def weight(result: Any, frm: str, cluster: str, to: str, dst: str) -> float:
    route = result.routing.get(frm, cluster, to)
    assert route is not None
    return float(route.normalized().get(dst, 0.0))


# -- station models are values ---------------------------------------------------------------


def test_a_station_model_is_a_hashable_value_compared_by_value() -> None:
    a, b = MMcStation(3), MMcStation(3)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != MMcStation(4)
    assert {a: 1}[b] == 1
    with pytest.raises(AttributeError):
        a.replicas = 5  # type: ignore[misc]


@dataclass(frozen=True)
class Doubled:
    """Every station twice as big as its replicas say: the baselines must ask the model."""

    inner: MMcLatencyModel

    def station(self, service: str, cluster: str) -> MMcStation:
        return MMcStation(2 * self.inner.replicas[(service, cluster)])


def test_waterfall_fills_up_to_the_models_capacity_not_1000_per_replica() -> None:
    s = two_sites()
    # front@west takes 300 rps x 2 ms = 600 ms/s from its ingress. With the fill line at 20%,
    # its model's capacity (2 replicas, 2000 ms/s) takes 400 and 200 spill to east; a model twice
    # as big takes all 600.
    plain = waterfall_routing(s, fill=0.2).get("ingress", "west", "front.home")
    big = waterfall_routing(s, fill=0.2, latency=Doubled(s.latency_model())).get(
        "ingress", "west", "front.home"
    )
    assert plain is not None and big is not None
    assert plain.normalized() == {"west": pytest.approx(2 / 3), "east": pytest.approx(1 / 3)}
    assert big.normalized() == {"west": 1.0}


# -- work bounds ---------------------------------------------------------------------------


def test_an_upper_work_bound_moves_work_away_from_a_station() -> None:
    s = two_sites()
    free = solve(s)
    w_free = station_work(s, free)[("db", "west")]
    hi = 0.6 * w_free
    bounded = solve(s, work_bounds={("db", "west"): (0.0, hi)})
    w = station_work(s, bounded)
    assert w[("db", "west")] <= hi * (1 + TOL)
    assert w[("db", "west")] + w[("db", "east")] == pytest.approx(400)
    assert bounded.evaluation.objective >= free.evaluation.objective - 1e-9


def test_a_lower_work_bound_keeps_work_at_a_station() -> None:
    s = two_sites()
    free = solve(s)
    w_free = station_work(s, free)[("front", "east")]
    lo = w_free + 200  # ms/s: 100 more front requests than it takes unbounded
    bounded = solve(s, work_bounds={("front", "east"): (lo, 1e9)})
    assert station_work(s, bounded)[("front", "east")] >= lo * (1 - TOL)


def test_work_bounds_that_admit_nothing_raise_a_named_infeasible_error() -> None:
    s = two_sites()
    with pytest.raises(InfeasibleError, match=r"db@west.*above the station's cap"):
        solve(s, work_bounds={("db", "west"): (950.0, 2000.0)})  # cap: 0.9 x 1000
    with pytest.raises(InfeasibleError, match=r"db@east.*empty"):
        solve(s, work_bounds={("db", "east"): (10.0, 5.0)})
    # Each bound alone is fine; together db cannot take its 400 ms/s.
    with pytest.raises(InfeasibleError, match="admit no routing"):
        solve(s, work_bounds={("db", "west"): (0.0, 150.0), ("db", "east"): (0.0, 150.0)})
    with pytest.raises(SolveError, match="no such station"):
        solve(s, work_bounds={("db", "far"): (0.0, 1.0)})


def test_work_bounds_below_a_services_work_are_infeasible_without_an_lp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """db's work (400 ms/s) is the same under every routing: bounds summing below it need no LP
    to be refused, and the LP, asked anyway, agrees."""
    s = two_sites()
    short = {("db", "west"): (0.0, 150.0), ("db", "east"): (0.0, 150.0)}
    lps: list[object] = []
    monkeypatch.setattr(solve_mod, "solve_lp", lambda form: lps.append(form))
    with pytest.raises(InfeasibleError, match=r"db take at most 300 ms/s.*below its 400 ms/s"):
        solve(s, work_bounds=short)
    assert lps == []
    monkeypatch.undo()
    monkeypatch.setattr(formulation, "_check_service_room", lambda scenario, stations: None)
    with pytest.raises(InfeasibleError, match=r"HiGHS: Infeasible"):
        solve(s, work_bounds=short)
    # Room for db's work in sum, but not where the weight bounds send it: the LP finds it.
    west_only = [WeightBound(RouteKey("front", c, "db.get"), "east", 0.0, 0.0) for c in WE]
    with pytest.raises(InfeasibleError, match=r"HiGHS"):
        solve(s, work_bounds={("db", "west"): (0.0, 300.0)}, constraints=west_only)


# -- weight bounds and rate rows -------------------------------------------------------------


def test_weight_bounds_hold_on_ingress_and_on_inner_keys() -> None:
    s = two_sites()
    free = solve(s)
    assert weight(free, "ingress", "west", "front.home", "west") > 0.5  # the bounds bind
    assert weight(free, "front", "east", "db.get", "west") < 0.7
    cons = [
        WeightBound(RouteKey("ingress", "west", "front.home"), "west", hi=0.4),
        WeightBound(RouteKey("front", "east", "db.get"), "west", lo=0.7),
    ]
    r = solve(s, constraints=cons)
    assert weight(r, "ingress", "west", "front.home", "west") <= 0.4 + TOL
    assert weight(r, "front", "east", "db.get", "west") >= 0.7 - TOL
    assert r.evaluation.objective >= free.evaluation.objective - 1e-9


def test_a_rate_row_caps_calls() -> None:
    s = two_sites()
    key = RouteKey("ingress", "west", "front.home")
    assert solve(s).evaluation.call_rps[("ingress", "west", "front.home", "west")] > 120
    r = solve(s, constraints=[RateRow(((key, "west", 1.0),), upper=120.0, name="cap")])
    assert r.evaluation.call_rps[("ingress", "west", "front.home", "west")] <= 120 * (1 + TOL)


def test_a_key_without_traffic_prints_weights_inside_its_bounds() -> None:
    s = two_sites()
    key = RouteKey("ingress", "east", "idle.x")
    r = solve(s, constraints=[WeightBound(key, "west", hi=0.25)])
    # Unbounded it would go all to west (nearest); bounded, 0.25 there and the rest to far.
    route = r.routing.get("ingress", "east", "idle.x")
    assert route is not None
    assert route.normalized() == {"west": pytest.approx(0.25), "far": pytest.approx(0.75)}


def test_weight_bounds_that_admit_nothing_raise_a_named_infeasible_error() -> None:
    s = two_sites()
    key = RouteKey("ingress", "west", "front.home")
    with pytest.raises(InfeasibleError, match=r"ingress@west -> front\.home.*sum to 1\.2"):
        solve(s, constraints=[WeightBound(key, "west", lo=0.6), WeightBound(key, "east", lo=0.6)])
    with pytest.raises(InfeasibleError, match=r"upper bounds sum to 0\.5"):
        solve(s, constraints=[WeightBound(key, "west", hi=0.2), WeightBound(key, "east", hi=0.3)])
    with pytest.raises(InfeasibleError, match="not deployed"):
        solve(s, constraints=[WeightBound(key, "far", lo=0.1)])
    with pytest.raises(SolveError, match="no route key"):
        solve(s, constraints=[WeightBound(RouteKey("ingress", "far", "db.get"), "west", lo=0.1)])
    # All of west's front traffic forced to east, and east's front capped: HiGHS finds it.
    with pytest.raises(InfeasibleError, match="admit no routing"):
        solve(
            s,
            constraints=[WeightBound(key, "east", lo=1.0)],
            work_bounds={("front", "east"): (0.0, 500.0)},
        )


@dataclass(frozen=True)
class PointByPoint:
    """An M/M/c station without the batch `costs_and_slopes`: its curve asked point by point."""

    replicas: int

    @property
    def capacity(self) -> float:
        return MMcStation(self.replicas).capacity

    def queue_cost(self, work: float) -> float:
        return MMcStation(self.replicas).queue_cost(work)

    def queue_slope(self, work: float) -> float:
        return MMcStation(self.replicas).queue_slope(work)


@dataclass(frozen=True)
class PointByPointModel:
    inner: MMcLatencyModel

    def station(self, service: str, cluster: str) -> PointByPoint:
        return PointByPoint(self.inner.replicas[(service, cluster)])


def test_first_tangents_from_the_batch_are_those_point_by_point() -> None:
    s = two_sites()
    bounds = {("db", "west"): (0.0, 500.0)}
    batch = formulation.build(s, s.latency_model(), work_bounds=bounds).program()
    single = formulation.build(s, PointByPointModel(s.latency_model()), work_bounds=bounds)
    one = single.program()
    assert batch.piece_station.tolist() == one.piece_station.tolist()
    assert batch.piece_slope == pytest.approx(one.piece_slope, rel=1e-12)
    assert batch.bounds == pytest.approx(one.bounds, rel=1e-12)
    assert batch.offset == pytest.approx(one.offset, rel=1e-12)
