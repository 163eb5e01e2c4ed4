"""The synthetic app generator: valid scenario files, deterministic, shaped as documented."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout
from dataclasses import replace

import pytest
import yaml

from slate.model.scenario_file import scenario_from_dict
from slate.optimizer.capacity import endpoint_totals
from slate.sim.synthetic import (
    SLATE_SIZED,
    SyntheticSpec,
    main,
    slate_sized,
    synthetic_dict,
    synthetic_scenario,
)

SIZES = [
    SyntheticSpec(clusters=1, services=1, endpoints_per_service=1),
    SyntheticSpec(clusters=2, services=3, endpoints_per_service=1, seed=4),
    SyntheticSpec(clusters=3, services=12, endpoints_per_service=2, seed=7, cost_weight=5),
    SyntheticSpec(clusters=5, services=30, endpoints_per_service=3, traffic_classes=9, seed=2),
    SyntheticSpec(clusters=20, services=40, endpoints_per_service=2, seed=3),
    SLATE_SIZED,
]


@pytest.mark.parametrize("spec", SIZES, ids=lambda s: s.label)
def test_the_file_survives_yaml_and_parses(spec: SyntheticSpec) -> None:
    data = synthetic_dict(spec)
    assert yaml.safe_load(yaml.safe_dump(data, sort_keys=False)) == data
    scenario = scenario_from_dict(data)
    assert len(scenario.topology.clusters) == spec.clusters
    assert len(scenario.app.services) == spec.services
    assert len(scenario.ingress) == spec.classes
    assert scenario.objective.cost_weight_ms_per_usd_hour == spec.cost_weight


@pytest.mark.parametrize("spec", SIZES, ids=lambda s: s.label)
def test_every_endpoint_gets_traffic_and_the_load_hits_the_target(spec: SyntheticSpec) -> None:
    scenario = synthetic_scenario(spec)
    totals = endpoint_totals(scenario)
    assert all(totals.get(eid, 0.0) > 0 for eid in scenario.app.endpoints)
    work = sum(totals[e.id] * e.service_ms for e in scenario.app.endpoints.values())
    capacity = 1000.0 * sum(n for s in scenario.app.services for n in s.replicas.values())
    # Up to the rounding of rps and service times in the file.
    assert math.isclose(work / capacity, spec.target_utilization, rel_tol=0.02)


def test_same_spec_same_file_and_seeds_differ() -> None:
    assert synthetic_dict(SLATE_SIZED) == synthetic_dict(SLATE_SIZED)
    assert synthetic_dict(slate_sized(1)) != synthetic_dict(slate_sized(2))


def test_the_slate_sized_app_has_ten_classes_on_distinct_paths() -> None:
    scenario = synthetic_scenario(SLATE_SIZED)
    assert (len(scenario.topology.clusters), len(scenario.app.services)) == (10, 16)
    entries = [d.endpoint for d in scenario.ingress]
    assert len(set(entries)) == 10
    first_hops = {frozenset(c.to for c in scenario.app.endpoint(e).calls) for e in entries}
    assert len(first_hops) == 10


def test_the_call_graph_is_layered_with_small_fan_out() -> None:
    scenario = synthetic_scenario(SyntheticSpec(clusters=4, services=40, endpoints_per_service=2))
    app = scenario.app
    fan_outs = [len(e.calls) for e in app.endpoints.values() if e.calls]
    assert min(fan_outs) >= 1
    assert sum(f <= 3 for f in fan_outs) >= 0.9 * len(fan_outs)
    leaves = [s for s in app.services if not any(e.calls for e in s.endpoints)]
    assert leaves  # stores
    multipliers = {c.per_request for e in app.endpoints.values() for c in e.calls}
    assert any(m < 1 for m in multipliers) and any(m > 1 for m in multipliers)
    service_ms = sorted(e.service_ms for e in app.endpoints.values())
    assert service_ms[-1] > 10 * service_ms[0]  # heavy and light endpoints
    assert any(len(s.replicas) < 4 for s in app.services)  # partial deployments


def test_demand_is_regionally_skewed() -> None:
    scenario = synthetic_scenario(SyntheticSpec(clusters=6, services=10))
    per_cluster = {c: 0.0 for c in scenario.topology.clusters}
    for d in scenario.ingress:
        for c, rps in d.rps.items():
            per_cluster[c] += rps
    assert max(per_cluster.values()) > 3 * min(per_cluster.values())


@pytest.mark.parametrize(
    "bad",
    [
        {"clusters": 0},
        {"services": 0},
        {"endpoints_per_service": 0},
        {"traffic_classes": 0},
        {"target_utilization": 0.0},
        {"max_utilization": 1.5},
        {"cost_weight": -1.0},
        {"capacity_follows_demand": 2.0},
    ],
)
def test_nonsense_specs_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SyntheticSpec(**bad)  # type: ignore[arg-type]


def test_the_module_prints_a_scenario_file() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--preset", "slate", "--seed", "3", "--utilization", "0.5"]) == 0
    scenario = scenario_from_dict(yaml.safe_load(out.getvalue()))
    assert len(scenario.topology.clusters) == 10
    assert len(scenario.ingress) == 10


def test_everywhere_deploys_every_service_in_every_cluster() -> None:
    spec = SyntheticSpec(clusters=5, services=12, seed=3)
    dense = synthetic_scenario(replace(spec, everywhere=True))
    sparse = synthetic_scenario(spec)
    assert all(len(s.replicas) == 5 for s in dense.app.services)
    assert any(len(s.replicas) < 5 for s in sparse.app.services)
    assert dense.name.endswith("-everywhere") and not sparse.name.endswith("-everywhere")
