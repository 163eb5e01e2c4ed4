"""The baselines' rules on cases small enough to follow by hand (REFERENCE.md defines them)."""

from __future__ import annotations

from typing import Any

import pytest

from slate.model.scenario_file import scenario_from_dict
from slate.optimizer.baselines import global_routing, local_routing, waterfall_routing


def two_region(rps_a: float, rps_b: float) -> dict[str, Any]:
    return {
        "clusters": ["a", "b", "c"],
        "rtt_ms": {"a": {"b": 10, "c": 30}, "b": {"c": 10}},
        "services": {
            "s": {
                "replicas": {"a": 1, "b": 1},
                "endpoints": {
                    "x": {
                        "service_ms": 1,
                        "calls": [
                            {"to": "t.y", "per_request": 1, "request_kb": 0, "response_kb": 0}
                        ],
                    }
                },
            },
            "t": {"replicas": {"a": 1, "c": 3}, "endpoints": {"y": {"service_ms": 1}}},
        },
        "ingress": [
            {"endpoint": "s.x", "rps": {"a": rps_a, "b": rps_b}, "request_kb": 0, "response_kb": 0}
        ],
    }


def weights(routing: Any, frm: str, cluster: str, to: str) -> dict[str, Any]:
    route = routing.get(frm, cluster, to)
    assert route is not None
    return {c: pytest.approx(w) for c, w in route.normalized().items()}


def test_waterfall_spills_overflow_to_the_next_nearest() -> None:
    s = scenario_from_dict(two_region(1000, 100))
    r = waterfall_routing(s)
    # a: 1000 ms/s of work, 800 fit under 80% of one replica; the 200 left spill to b.
    assert weights(r, "ingress", "a", "s.x") == {"a": 0.8, "b": 0.2}
    assert weights(r, "ingress", "b", "s.x") == {"b": 1.0}


def test_waterfall_spreads_by_replicas_when_all_are_full() -> None:
    s = scenario_from_dict(two_region(1000, 900))
    r = waterfall_routing(s)
    # Both fill their own 800; the overflows (200 and 100) find no spare and split 1:1.
    assert weights(r, "ingress", "a", "s.x") == {"a": 0.9, "b": 0.1}
    assert weights(r, "ingress", "b", "s.x") == {"a": 50 / 900, "b": 850 / 900}


def test_waterfall_uses_upstream_routing_to_find_downstream_demand() -> None:
    s = scenario_from_dict(two_region(1000, 100))
    r = waterfall_routing(s)
    # s@a serves 800 rps and s@b 100 + 200 spilled = 300 rps, each calling t once. t is not in b;
    # s@a's calls fill t@a first (local sources go first): 800 ms/s = 80% of one replica, full.
    # s@b's nearest t is a (RTT 10, tied with c and declared first), which is full: all to c.
    assert weights(r, "s", "a", "t.y") == {"a": 1.0}
    assert weights(r, "s", "b", "t.y") == {"c": 1.0}


def test_local_goes_to_the_nearest_deployment_ties_split_equally() -> None:
    s = scenario_from_dict(two_region(10, 10))
    r = local_routing(s)
    assert weights(r, "ingress", "a", "s.x") == {"a": 1.0}
    # a and c are both 10 ms from b: split equally, as a proxy with equal locality weights does
    # (the xDS views serve exactly that for an unrouted key; see test_model_and_xds_agree...).
    assert weights(r, "s", "b", "t.y") == {"a": 0.5, "c": 0.5}


def test_global_splits_by_replica_count() -> None:
    s = scenario_from_dict(two_region(10, 10))
    r = global_routing(s)
    assert weights(r, "s", "a", "t.y") == {"a": 0.25, "c": 0.75}
    assert weights(r, "ingress", "b", "s.x") == {"a": 0.5, "b": 0.5}


def test_service_order_breaks_service_level_cycles() -> None:
    data: dict[str, Any] = {
        "clusters": ["a"],
        "services": {
            "p": {
                "replicas": {"a": 1},
                "endpoints": {
                    "x": {
                        "service_ms": 1,
                        "calls": [
                            {"to": "q.y", "per_request": 1, "request_kb": 0, "response_kb": 0}
                        ],
                    },
                    "z": {"service_ms": 1},
                },
            },
            "q": {
                "replicas": {"a": 1},
                "endpoints": {
                    "y": {
                        "service_ms": 1,
                        "calls": [
                            {"to": "p.z", "per_request": 1, "request_kb": 0, "response_kb": 0}
                        ],
                    }
                },
            },
        },
        "ingress": [{"endpoint": "p.x", "rps": {"a": 1}, "request_kb": 0, "response_kb": 0}],
    }
    s = scenario_from_dict(data)  # p.x -> q.y -> p.z: a DAG of endpoints, a cycle of services
    assert s.app.topo_order == ("p.x", "q.y", "p.z")
    assert s.app.service_order == ("p", "q")
    assert weights(waterfall_routing(s), "q", "a", "p.z") == {"a": 1.0}
