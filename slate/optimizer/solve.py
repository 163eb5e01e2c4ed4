"""solve(): the optimal routing, by cutting planes over the LP of formulation.py.

Each round solves the LP with scipy's HiGHS, then measures what the LP misjudged about its own
routing: the queueing cost its tangents underestimate, and the egress of aggregated keys priced at
the previous round's byte sizes. It stops when that is below `tolerance` (relative), so `bound`
(the last LP objective) and the evaluated objective of the returned routing bracket the optimum;
otherwise it adds a tangent at every station the LP underestimated, re-prices the byte sizes at
the round's loads and goes again. The returned routing is the best of the rounds by its exact
objective. Re-priced byte sizes can swing the LP between two routings; it stops when two rounds
in a row bring nothing better (then `bound` is only as good as the byte-size averaging, see
formulation.py).

Demand that cannot fit under max_utilization is not an error: the result carries the shortfalls
(which services, by how much) and the least overloaded routing (capacity.py).

The caller may bound each station's work (`work_bounds`, ms of work per second: the trusted range
of a fitted curve) and add rows on route weights or call rates (`constraints`, bounds.py: the
rollout limit, a minimum local share). Bounds that admit no routing raise InfeasibleError (a
SolveError) naming the station or key when one alone is impossible.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linprog

from slate.evaluate import Evaluation, evaluate
from slate.model.keys import split_or_nearest
from slate.model.latency import LatencyModel
from slate.model.routing import Prediction, Route, Routing
from slate.model.scenario import Scenario
from slate.optimizer import baselines
from slate.optimizer.bounds import Constraint, feasible_shares, weight_bounds_by_key
from slate.optimizer.capacity import Shortfall, shortfalls
from slate.optimizer.errors import InfeasibleError, SolveError
from slate.optimizer.formulation import Formulation, Program, build

log = logging.getLogger(__name__)

Policy = Literal["optimal", "local", "global", "waterfall"]
POLICIES: tuple[Policy, ...] = ("optimal", "local", "global", "waterfall")


DEFAULT_TOLERANCE = 5e-4
"""Relative optimality the cutting planes stop at: 0.05% of the objective, well inside what the
latency model itself can promise, and one LP round fewer than 1e-4 on large meshes with egress
priced (10 clusters x 100 services: 1 round, ~2.5 s, instead of 2 rounds, ~5 s)."""


__all__ = ["POLICIES", "InfeasibleError", "PolicyResult", "SolveError", "run_policy", "solve"]


@dataclass(frozen=True)
class SolveStats:
    variables: int
    constraints: int
    rounds: int
    seconds: float


@dataclass(frozen=True)
class PolicyResult:
    policy: Policy
    routing: Routing  # with `predicted` from the evaluator
    evaluation: Evaluation
    shortfalls: tuple[Shortfall, ...] = ()
    bound: float | None = None  # LP lower bound on the objective (optimal policy only)
    stats: SolveStats | None = None

    @property
    def over_capacity(self) -> bool:
        return bool(self.shortfalls)

    @property
    def gap(self) -> float | None:
        """Relative distance of the evaluated objective above the LP bound."""
        if self.bound is None or not math.isfinite(self.evaluation.objective):
            return None
        return (self.evaluation.objective - self.bound) / max(abs(self.bound), 1e-12)


def _with_prediction(routing: Routing, ev: Evaluation) -> Routing:
    pred = Prediction(ev.mean_latency_ms, ev.egress_usd_per_hour, ev.max_utilization)
    return Routing(routing.routes, pred)


def run_policy(
    scenario: Scenario, policy: Policy, latency: LatencyModel | None = None
) -> PolicyResult:
    if policy == "optimal":
        return solve(scenario, latency)
    if policy == "waterfall":
        routing = baselines.waterfall_routing(scenario, latency=latency)
    else:
        make = {"local": baselines.local_routing, "global": baselines.global_routing}[policy]
        routing = make(scenario)
    ev = evaluate(scenario, routing, latency)
    return PolicyResult(
        policy, _with_prediction(routing, ev), ev, tuple(shortfalls(scenario, latency))
    )


def solve(
    scenario: Scenario,
    latency: LatencyModel | None = None,
    *,
    work_bounds: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    constraints: Iterable[Constraint] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_rounds: int = 12,
) -> PolicyResult:
    """The optimal routing. `work_bounds`: (service, cluster) -> (lo, hi) ms of work per second;
    `constraints`: WeightBound / RateRow values (bounds.py). Raises InfeasibleError when they
    admit no routing, SolveError when HiGHS fails."""
    latency = latency or scenario.latency_model()
    started = time.perf_counter()
    constraints = tuple(constraints or ())
    short = shortfalls(scenario, latency)
    # A service that cannot fit is held at the least utilization any routing gives it.
    caps = {s.service: s.min_utilization * (1 + 1e-7) for s in short}
    unpriced = {s.service for s in short if s.min_utilization >= 1.0}
    f = build(scenario, latency, caps, unpriced, work_bounds=work_bounds, constraints=constraints)

    # The routing returned is the best of the rounds by its exact objective (the LP's objective
    # plus what it misjudged): with byte sizes re-priced between rounds, rounds need not improve.
    best_x: np.ndarray | None = None
    best_true = math.inf
    gained_at = 0  # the last round that improved the best by more than the tolerance
    lp_objective = math.nan
    lp: Program | None = None
    rounds = 0
    seen: set[tuple[int, bytes]] = set()  # (tangent count, byte sizes) of the LPs solved so far
    for rounds in range(1, max_rounds + 1):
        lp = f.program()
        seen.add(_state(f))
        x, lp_objective = _solve_lp(lp, f.total_rps, rounds)
        # What the LP misjudges about its own routing: the queueing cost below the tangents, and
        # the egress of aggregated keys priced at the previous round's byte sizes.
        w, t = f.station_work(lp, x)
        under = np.zeros(f.n_s)
        for s, spec in enumerate(f.stations):
            if spec.priced:
                under[s] = spec.model.queue_cost(float(w[s])) - float(t[s])
        y = x[: f.n_y]
        egress_before = float(f.egress_cost() @ y)
        f.update_byte_sizes(f.loads(x))
        egress_moved = float(f.egress_cost() @ y) - egress_before
        true_objective = lp_objective + float(under.sum()) / f.total_rps + egress_moved
        scale = max(abs(lp_objective), 1e-9)
        if true_objective < best_true - tolerance * scale:
            gained_at = rounds
        if true_objective <= best_true:
            best_x, best_true = x, true_objective
        misjudged = float(under.sum()) / f.total_rps + abs(egress_moved)
        if misjudged <= tolerance * scale:
            break
        if egress_moved != 0 and rounds - gained_at >= 2:
            break  # the byte sizes swing the LP between routings, and none does better
        floor = 1e-3 * tolerance * scale * f.total_rps / max(f.n_s, 1)
        for s in np.flatnonzero(under > floor).tolist():
            f.add_tangent(s, float(w[s]))
        if _state(f) in seen:
            break  # the next LP would be one already solved
    assert best_x is not None and lp is not None
    routing = _routing(f, best_x, constraints)
    ev = evaluate(scenario, routing, latency)
    stats = SolveStats(
        variables=lp.n_vars,
        constraints=lp.n_rows,
        rounds=rounds,
        seconds=time.perf_counter() - started,
    )
    log.debug(
        "solved scenario=%s rounds=%d lp=%.6g evaluated=%.6g seconds=%.3f",
        scenario.name,
        rounds,
        lp_objective,
        ev.objective,
        stats.seconds,
    )
    return PolicyResult(
        "optimal", _with_prediction(routing, ev), ev, tuple(short), lp_objective, stats
    )


IPM_ROWS = 2000
"""From this many rows on, HiGHS's interior point method (with crossover, so the solution is still a
vertex) beats its dual simplex on these LPs; below, the simplex is faster."""


def _solve_lp(lp: Program, total_rps: float, round_: int) -> tuple[np.ndarray, float]:
    """(solution, objective). The costs go to HiGHS in request-ms per second rather than per
    request: per request they are ~1e-4, down where HiGHS's absolute optimality tolerance (1e-7)
    lets it stop short and fill a station's pieces out of order."""
    method = "highs-ipm" if lp.n_rows >= IPM_ROWS else "highs-ds"
    res = linprog(
        lp.c * total_rps,
        A_ub=lp.a_ub,
        b_ub=lp.b_ub,
        A_eq=lp.a_eq,
        b_eq=lp.b_eq,
        bounds=lp.bounds,
        method=method,
    )
    if res.status == 2:
        raise InfeasibleError(
            "the work bounds and route constraints together admit no routing "
            f"(HiGHS: {res.message})"
        )
    if res.status != 0 or res.x is None:
        raise SolveError(f"HiGHS: {res.message} (status {res.status}, round {round_})")
    return np.asarray(res.x), float(res.fun) / total_rps + lp.offset


def _state(f: Formulation) -> tuple[int, bytes]:
    """What the next LP depends on besides the scenario: its tangents and byte sizes."""
    return sum(len(spec.tangents) for spec in f.stations), np.round(f.key_kb, 9).tobytes()


def _routing(f: Formulation, x: np.ndarray, constraints: tuple[Constraint, ...] = ()) -> Routing:
    topo = f.scenario.topology
    app = f.scenario.app
    bounded = weight_bounds_by_key(constraints)
    y = x[: f.n_y]
    routes: list[Route] = []
    start = 0
    for i, k in enumerate(f.keys):
        dsts = f.key_dsts[i]
        vals = np.maximum(y[start : start + len(dsts)], 0.0)
        start += len(dsts)
        total = float(vals.sum())
        if total > 1e-9:
            weights = {
                topo.clusters[d]: float(v / total)
                for d, v in zip(dsts, vals, strict=True)
                if v / total > 1e-7
            }
        else:  # no traffic on this key: the default, nearest cluster (inside its bounds)
            deployed = list(app.service_of(k.to).clusters)
            shares = None
            if k in bounded:
                lo, hi = bounded[k]
                shares = feasible_shares(topo.by_distance(k.from_cluster, deployed), lo, hi)
            weights = shares or dict(split_or_nearest(topo, k.from_cluster, deployed, None))
        routes.append(Route(k.from_service, k.from_cluster, k.to, weights))
    return Routing(tuple(routes))
