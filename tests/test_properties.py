"""Properties of the optimizer, the baselines and the evaluator on generated multi-cluster apps.

Every example is a small synthetic app (slate.sim.synthetic): 1-4 clusters, 1-7 services, 1-3
endpoints per service, random loads, caps and cost weights. Hypothesis runs derandomized and
without its example database, so CI and every local run see the same examples.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from slate.evaluate import Evaluation
from slate.model.app import split_endpoint_id
from slate.model.keys import route_keys
from slate.model.routing import INGRESS
from slate.model.scenario import Scenario
from slate.model.scenario_file import scenario_from_dict
from slate.optimizer.capacity import endpoint_totals, shortfalls
from slate.optimizer.solve import DEFAULT_TOLERANCE, POLICIES, PolicyResult, run_policy, solve
from slate.sim.synthetic import SyntheticSpec, synthetic_dict, synthetic_scenario

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,  # no replay of examples saved by earlier local runs: every run is the same
    suppress_health_check=[HealthCheck.too_slow],
)

SOLVE_TOLERANCE = DEFAULT_TOLERANCE
"""solve()'s default: it stops once the LP underestimates its own routing by less than this."""


FITTING_LOADS = st.floats(0.15, 0.75)
COST_WEIGHTS = st.just(0.0) | st.floats(0.0, 50.0)


def specs(
    utilization: st.SearchStrategy[float] = FITTING_LOADS,
    cost_weight: st.SearchStrategy[float] = COST_WEIGHTS,
) -> st.SearchStrategy[SyntheticSpec]:
    return st.builds(
        SyntheticSpec,
        clusters=st.integers(1, 4),
        services=st.integers(1, 7),
        endpoints_per_service=st.integers(1, 3),
        traffic_classes=st.none() | st.integers(1, 3),
        seed=st.integers(0, 2**20),
        target_utilization=utilization,
        max_utilization=st.floats(0.75, 0.95),
        cost_weight=cost_weight,
    )


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def _fits(ev: Evaluation, scenario: Scenario) -> bool:
    return math.isfinite(ev.objective) and (
        ev.max_utilization <= scenario.objective.max_utilization * (1 + 1e-9)
    )


@given(spec=specs())
@PROPERTY
def test_every_policy_routes_each_key_by_a_distribution_over_deployed_clusters(
    spec: SyntheticSpec,
) -> None:
    scenario = synthetic_scenario(spec)
    keys = {(k.from_service, k.from_cluster, k.to) for k in route_keys(scenario)}
    for policy in POLICIES:
        routing = run_policy(scenario, policy).routing
        assert {r.key for r in routing.routes} == keys, policy
        for route in routing.routes:
            deployed = scenario.app.service_of(route.to).replicas
            assert route.weights, (policy, route)
            assert all(w >= 0 for w in route.weights.values()), (policy, route)
            assert set(route.weights) <= set(deployed), (policy, route)
            # The optimum drops shares below 1e-7 of a key, so its sums may fall short by that.
            assert math.isclose(sum(route.weights.values()), 1.0, abs_tol=1e-6), (policy, route)


@given(spec=specs())
@PROPERTY
def test_flow_is_conserved(spec: SyntheticSpec) -> None:
    scenario = synthetic_scenario(spec)
    app = scenario.app
    totals = endpoint_totals(scenario)
    ingress: dict[tuple[str, str], float] = defaultdict(float)
    for d in scenario.ingress:
        for c, rps in d.rps.items():
            ingress[(c, d.endpoint)] += rps
    for policy in ("optimal", "waterfall"):
        ev = run_policy(scenario, policy).evaluation
        # The rate reaching each endpoint, summed over clusters, does not depend on routing.
        per_endpoint: dict[str, float] = defaultdict(float)
        for (eid, cluster), rps in ev.loads.items():
            assert cluster in app.service_of(eid).replicas, (policy, eid, cluster)
            per_endpoint[eid] += rps
        for eid in app.endpoints:
            assert _close(per_endpoint.get(eid, 0.0), totals.get(eid, 0.0)), (policy, eid)
        # Every key sends on exactly what its callers' loads ask for.
        sent: dict[tuple[str, str, str], float] = defaultdict(float)
        for (src, src_c, dst, _dst_c), rps in ev.call_rps.items():
            sent[(src, src_c, dst)] += rps
        for k in route_keys(scenario):
            if k.from_service == INGRESS:
                want = ingress[(k.from_cluster, k.to)]
            else:
                want = sum(
                    call.per_request * ev.loads.get((e.id, k.from_cluster), 0.0)
                    for e in app.service(k.from_service).endpoints
                    for call in e.calls
                    if call.to == k.to
                )
            assert _close(sent.get((k.from_service, k.from_cluster, k.to), 0.0), want), (policy, k)


@given(spec=specs())
@PROPERTY
def test_the_optimum_is_no_worse_than_any_baseline_that_fits(spec: SyntheticSpec) -> None:
    scenario = synthetic_scenario(spec)
    best = solve(scenario)
    assume(not best.over_capacity)  # then no baseline fits either
    for policy in ("local", "global", "waterfall"):
        base = run_policy(scenario, policy).evaluation
        if not _fits(base, scenario):
            continue
        # A baseline that fits under max_utilization is a feasible point of the LP, where the LP
        # charges it no more than the evaluator does (tangents lie below the convex station cost),
        # so the LP's routing can only lose to it by what the LP misjudges about its own routing:
        # the tangent gap solve() stops at (1e-4 relative), and on keys that aggregate calls of
        # several source endpoints, the byte sizes that the LP prices at the previous round's
        # rate-weighted means (formulation.py). 1e-3 covers both with a margin.
        assert best.evaluation.objective <= base.objective * (1 + 1e-3) + 1e-9, policy


def _shared_byte_sizes(data: dict[str, Any]) -> dict[str, Any]:
    """Give every call into one endpoint the same request/response sizes, so that the LP's
    per-key mean sizes are exact under any routing."""
    sizes: dict[str, tuple[float, float]] = {}
    for svc in data["services"].values():
        for ep in svc["endpoints"].values():
            for call in ep.get("calls", []):
                rq, rs = sizes.setdefault(call["to"], (call["request_kb"], call["response_kb"]))
                call["request_kb"], call["response_kb"] = rq, rs
    return data


@given(spec=specs())
@PROPERTY
def test_the_evaluator_agrees_with_the_lp_at_the_lps_own_routing(spec: SyntheticSpec) -> None:
    scenario = scenario_from_dict(_shared_byte_sizes(synthetic_dict(spec)))
    result = solve(scenario)
    assert result.bound is not None and result.stats is not None
    if result.stats.rounds == 12:
        pytest.fail(f"solve() did not converge in its 12 rounds: {result.stats}")
    # With byte sizes that do not depend on the mix of callers, the LP's only approximation is
    # the tangent-line station cost, which lies below the evaluator's (so the evaluated objective
    # is never below the bound, up to HiGHS's feasibility tolerance and the rounding of weights
    # to whole millionths: a service whose work fills its stations to the cap exactly, as
    # target_utilization == max_utilization generates, has no room to absorb it), and which
    # solve() refines until it is within SOLVE_TOLERANCE.
    # A service that saturates under any routing (FITTING_LOADS is the mean over all stations,
    # so one service can still be short) has no finite objective and so no gap: the shortfall
    # test covers those.
    assume(all(s.min_utilization < 1.0 for s in result.shortfalls))
    assert result.gap is not None
    assert -5e-6 <= result.gap <= 2 * SOLVE_TOLERANCE, (result.bound, result.evaluation.objective)


@given(spec=specs(utilization=st.floats(1.0, 2.5)))
@PROPERTY
def test_demand_beyond_capacity_is_reported_as_shortfalls_not_raised(spec: SyntheticSpec) -> None:
    scenario = synthetic_scenario(spec)
    result: PolicyResult = solve(scenario)  # must not raise
    expected = {s.service: s for s in shortfalls(scenario)}
    # The mean utilization over all stations is >= 1 > max_utilization, so some service is short.
    assert expected
    assert result.over_capacity
    assert {s.service for s in result.shortfalls} == set(expected)
    # The routing is the least overloaded one: every service at most at the utilization it cannot
    # get below (its shortfall), the others under max_utilization.
    cap = scenario.objective.max_utilization
    for st_ in result.evaluation.stations:
        short = expected.get(st_.service)
        limit = max(cap, short.min_utilization) if short else cap
        assert st_.utilization <= limit * (1 + 1e-6) + 1e-9, st_
    stuck = any(s.min_utilization >= 1.0 for s in expected.values())
    assert math.isfinite(result.evaluation.objective) == (not stuck)
    if not stuck:
        assert not result.evaluation.overloaded


def test_the_generated_apps_cover_what_the_properties_need() -> None:
    """Guard against a generator change that would make the properties vacuous."""
    caught = {"aggregated keys": 0, "partial deployment": 0, "local overloads": 0}
    for seed in range(6):
        scenario = synthetic_scenario(SyntheticSpec(clusters=3, services=6, seed=seed))
        app = scenario.app
        for svc in app.services:
            calls = [c.to for e in svc.endpoints for c in e.calls]
            caught["aggregated keys"] += len(calls) > len(set(calls))
            caught["partial deployment"] += len(svc.replicas) < 3
        local = run_policy(scenario, "local").evaluation
        caught["local overloads"] += bool(local.overloaded)
        assert {split_endpoint_id(d.endpoint)[0] for d in scenario.ingress} <= {
            s.name for s in app.services if len(s.replicas) == 3
        }
    assert all(caught.values()), caught
