"""solve(): the optimal routing, by cutting planes over the LP of formulation.py.

Each round solves the LP with HiGHS (highs.py), then measures what the LP misjudged about its own
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

The routing's weights are whole millionths (what `slate solve` prints, 6 decimals), evaluated as
printed; rounding that would lift a station above its cap is repaired (_repair_rounding).

The caller may bound each station's work (`work_bounds`, ms of work per second: the trusted range
of a fitted curve) and add rows on route weights or call rates (`constraints`, bounds.py: the
rollout limit, a minimum local share). Bounds that admit no routing raise InfeasibleError (a
SolveError) naming the station or key when one alone is impossible.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

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
from slate.optimizer.highs import solve_lp

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
    bound: float | None = None  # the LP's objective (optimal policy only)
    stats: SolveStats | None = None
    bound_certified: bool | None = None
    """Whether `bound` is a lower bound on every routing's objective (None without a bound). Not
    when egress is priced and a key aggregates calls of different byte sizes: the LP prices them
    at averaged sizes, and a routing can then score below its value (BOUND_CAVEAT)."""

    @property
    def bound_caveat(self) -> str | None:
        """Why `bound` may not bound the objective, or None when it does."""
        if self.bound is None or self.bound_certified:
            return None
        return BOUND_CAVEAT

    @property
    def over_capacity(self) -> bool:
        return bool(self.shortfalls)

    @property
    def gap(self) -> float | None:
        """Relative distance of the evaluated objective above the LP bound."""
        if self.bound is None or not math.isfinite(self.evaluation.objective):
            return None
        return (self.evaluation.objective - self.bound) / max(abs(self.bound), 1e-12)


BOUND_CAVEAT = (
    "not a certified lower bound: egress is priced and calls of different sizes share a route, "
    "so the LP prices them at averaged sizes"
)


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
        x, lp_objective = _solve_lp(lp, rounds)
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
    routing, ev = _repair_rounding(f, routing, ev, set(caps), latency)
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
        "optimal",
        _with_prediction(routing, ev),
        ev,
        tuple(short),
        lp_objective,
        stats,
        bound_certified=f.bound_certified(),
    )


def _solve_lp(lp: Program, round_: int) -> tuple[np.ndarray, float]:
    """(solution, objective), solved in the solver's units (Program.for_solver)."""
    form = lp.for_solver()
    try:
        res = solve_lp(form)
    except SolveError as e:
        if isinstance(e, InfeasibleError):
            raise
        raise SolveError(f"{e} (round {round_})") from None
    return res.x * form.col_scale, res.objective * form.cost_unit + lp.offset


def _state(f: Formulation) -> tuple[int, bytes]:
    """What the next LP depends on besides the scenario: its tangents and byte sizes."""
    return sum(len(spec.tangents) for spec in f.stations), np.round(f.key_kb, 9).tobytes()


WEIGHT_UNITS = 10**6
"""Weights are printed with 6 decimals (Route.to_json): solve() returns them as whole millionths
summing to exactly 1, so what a reader parses is what was evaluated."""

REPAIRS = 3


def _repair_rounding(
    f: Formulation,
    routing: Routing,
    ev: Evaluation,
    short: set[str],
    latency: LatencyModel,
) -> tuple[Routing, Evaluation]:
    """Round then repair: rounding weights to millionths moves a station's work by about 1e-6
    of its service's work per hop above it, enough to lift a station whose cap binds above
    max_utilization (or its caller's work bound). Each such station sheds the excess: on the keys
    into it, whole millionths of weight move from it to the cluster with the most room below its
    cap, fewest first; then the routing is evaluated again (the moves shift the calls below by as
    little), up to REPAIRS times. No LP is solved again, and the bound is untouched. Services
    that cannot fit are left alone (they are above max_utilization anyway); a service filled to
    its cap everywhere has no room to shed into, and stays up to ~1e-6 over: logged."""
    caps = {(spec.service, spec.cluster): spec.max_work for spec in f.stations}
    repairable = {(spec.service, spec.cluster) for spec in f.stations if spec.service not in short}
    app = f.scenario.app
    for attempt in range(REPAIRS + 1):
        work = {(st.service, st.cluster): st.work_ms_per_s for st in ev.stations}
        over = {
            key: work[key] - caps[key] for key in repairable if work[key] > caps[key] * (1 + 1e-12)
        }
        if not over:
            break
        if attempt == REPAIRS:
            log.warning("rounded weights lift stations=%d above their cap", len(over))
            break
        rate: dict[tuple[str, str, str], float] = defaultdict(float)
        for (src, src_c, dst, _dst_c), rps in ev.call_rps.items():
            rate[(src, src_c, dst)] += rps
        weights = {r.key: dict(r.weights) for r in routing.routes}
        room = {key: caps[key] - w for key, w in work.items()}
        for (service, cluster), excess in sorted(over.items()):
            left = excess * (1 + 1e-9) + 1e-12 * caps[(service, cluster)]
            for key, w in weights.items():
                if left <= 0:
                    break
                if cluster not in w or app.service_of(key.to).name != service:
                    continue
                per_unit = rate[key] * app.endpoint(key.to).service_ms / WEIGHT_UNITS
                if per_unit <= 0:
                    continue
                to = max(
                    (c for c in app.service(service).clusters if c != cluster),
                    key=lambda c: room[(service, c)],
                    default=None,
                )
                if to is None or room[(service, to)] <= 0:
                    continue
                units = min(
                    math.ceil(left / per_unit),
                    round(w[cluster] * WEIGHT_UNITS),
                    math.floor(room[(service, to)] / per_unit),
                )
                if units <= 0:
                    continue
                w[cluster] = (round(w[cluster] * WEIGHT_UNITS) - units) / WEIGHT_UNITS
                w[to] = (round(w.get(to, 0.0) * WEIGHT_UNITS) + units) / WEIGHT_UNITS
                if w[cluster] == 0:
                    del w[cluster]
                left -= units * per_unit
                room[(service, to)] -= units * per_unit
        routing = Routing(
            tuple(
                Route(r.from_service, r.from_cluster, r.to, weights[r.key]) for r in routing.routes
            )
        )
        ev = evaluate(f.scenario, routing, latency)
    return routing, ev


def _micro_round(weights: dict[str, float]) -> dict[str, float]:
    """Weights (summing to 1) as whole millionths summing to exactly 1, each within 1e-6 of its
    value: floors, plus one unit to the largest remainders."""
    raw = {c: w * WEIGHT_UNITS for c, w in weights.items()}
    units = {c: math.floor(v) for c, v in raw.items()}
    left = WEIGHT_UNITS - sum(units.values())
    for c in sorted(raw, key=lambda c: units[c] - raw[c])[: max(left, 0)]:
        units[c] += 1
    return {c: n / WEIGHT_UNITS for c, n in units.items() if n > 0}


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
        if total > 1e-9 * f.rate_unit:
            weights = {topo.clusters[d]: float(v / total) for d, v in zip(dsts, vals, strict=True)}
        else:  # no traffic on this key: the default, nearest cluster (inside its bounds)
            deployed = list(app.service_of(k.to).clusters)
            shares = None
            if k in bounded:
                lo, hi = bounded[k]
                shares = feasible_shares(topo.by_distance(k.from_cluster, deployed), lo, hi)
            weights = shares or dict(split_or_nearest(topo, k.from_cluster, deployed, None))
        routes.append(Route(k.from_service, k.from_cluster, k.to, _micro_round(weights)))
    return Routing(tuple(routes))
