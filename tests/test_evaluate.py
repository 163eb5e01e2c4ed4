"""The fluid evaluator on a scenario small enough to compute by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest
from tiny_scenario import tiny

from slate.evaluate import evaluate
from slate.model.routing import Route, Routing
from slate.model.scenario_file import scenario_from_dict
from slate.optimizer.baselines import local_routing

TINY: dict[str, Any] = tiny({"cost_weight_ms_per_usd_hour": 10})


def test_local_routing_by_hand() -> None:
    s = scenario_from_dict(TINY)
    ev = evaluate(s, local_routing(s))
    # front@west: 100 rps x 3 ms on 2 replicas, rho 0.15; Erlang C(2, a=0.3) in closed form:
    top = 0.3**2 / 2 * 2 / 1.7
    c2 = top / (1.3 + top)
    q_front_west = 1000 * c2 * 0.15 / 0.85
    q_front_east = 1000 * 0.15**2 / 0.85  # M/M/1, 50 rps x 3 ms
    q_db = 1000 * 0.3**2 / 0.7  # M/M/1, 300 rps x 1 ms
    stations = 300 + q_front_west + 150 + q_front_east + 300 + q_db
    rtt = 100 * 40  # front@east's 100 calls/s cross to db@west
    assert ev.mean_latency_ms == pytest.approx((stations + rtt) / 150, rel=1e-9)
    # 100 calls/s east->west: 1 kB priced east->west (default 0.02), 4 kB west->east (0.05).
    egress = 100 * (1 * 0.02 + 4 * 0.05) * 1e-6 * 3600
    assert ev.egress_usd_per_hour == pytest.approx(egress, rel=1e-9)
    assert ev.objective == pytest.approx(ev.mean_latency_ms + 10 * egress, rel=1e-9)
    assert ev.max_utilization == pytest.approx(0.3)
    assert ev.loads[("db.get", "west")] == pytest.approx(300)
    assert ev.call_rps[("front", "east", "db.get", "west")] == pytest.approx(100)
    # Per-entry latency: east's requests pay 2 x (40 ms RTT + db time) more than their local work.
    t_db = 1 + q_db / 300
    t_west = 3 + q_front_west / 100 + 2 * t_db
    t_east = 3 + q_front_east / 50 + 2 * (40 + t_db)
    assert ev.ingress_latency_ms["front.home"] == pytest.approx((100 * t_west + 50 * t_east) / 150)


def test_split_routes_and_missing_routes_fall_back_to_nearest() -> None:
    s = scenario_from_dict(TINY)
    routing = Routing((Route("ingress", "east", "front.home", {"west": 1, "east": 3}),))
    ev = evaluate(s, routing)
    assert ev.loads[("front.home", "west")] == pytest.approx(100 + 12.5)  # west's has no route
    assert ev.loads[("front.home", "east")] == pytest.approx(37.5)
    assert ev.call_rps[("ingress", "east", "front.home", "west")] == pytest.approx(12.5)


def test_weights_on_a_cluster_without_the_service_are_ignored() -> None:
    s = scenario_from_dict(TINY)
    ev = evaluate(s, Routing((Route("front", "west", "db.get", {"east": 1}),)))
    assert ev.loads[("db.get", "west")] == pytest.approx(300)  # nearest: the only one


def test_overload_is_infinite_and_named() -> None:
    data = dict(TINY, ingress=[dict(TINY["ingress"][0], rps={"west": 400, "east": 100})])
    s = scenario_from_dict(data)
    ev = evaluate(s, local_routing(s))
    assert math.isinf(ev.mean_latency_ms) and math.isinf(ev.objective)
    assert {(o.service, o.cluster) for o in ev.overloaded} == {("db", "west")}
    assert not ev.feasible
