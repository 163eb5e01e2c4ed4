"""Ways of handing one routing LP to HiGHS, timed against the way solve() does it, interleaved.

Run from the repository root:

    .venv/bin/python bench/lp_variants.py                       # 10 x 100 everywhere, 3 runs
    .venv/bin/python bench/lp_variants.py --case 20x200 --generator partial --runs 1
    .venv/bin/python bench/lp_variants.py --variants default,dual-ipm,dual-simplex

It builds the first cutting-plane round's LP of a bench/solve_scale.py app (same generator, seed,
utilization and cost weight), in the solver's units (Program.for_solver), then solves that very LP
once per variant per run, the variants interleaved so a busy machine slows them alike. Per
variant: the median and best wall time of HiGHS's run(), the median's ratio to `default` (the way
highs.solve_lp solves it), interior point and simplex iterations, and the objective's relative
difference to `default`'s (every variant solves the same LP: it should be ~1e-9).

Variants (see bench/README.md for what they measured):
  default          as highs.solve_lp: solver=ipm from IPM_ROWS rows (crossover on), else simplex
  no-crossover     run_crossover=off (the interior point, not a vertex)
  ipm-tol-1e-6/-5  the same, stopped at ipm_optimality_tolerance 1e-6 / 1e-5 (default 1e-8)
  ipx-dualize-N    IPX's own choice of solving the dual (ipx_dualize_strategy N; default 2)
  bound-scale+3    user_bound_scale=3 (and -3); cost-scale-6: user_objective_scale=-6
  simplex          dual simplex; simplex-scale0/4: simplex_scale_strategy 0 (off) / 4
  geo-scaled       rows and columns scaled by 4 passes of geometric-mean equilibration
                   (powers of 2) before HiGHS sees them (IPX's own scaling reports factors of 1)
  dual-ipm, dual-simplex
                   the explicit dual LP (one inequality row per primal column, a free variable
                   per equality row, a variable per finite upper bound) built from the same
                   triplets; the primal is read back from the row duals and checked
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import highspy
import numpy as np

from slate.optimizer.capacity import shortfalls
from slate.optimizer.formulation import FArray, Matrix, SolverForm, build
from slate.optimizer.highs import IPM_ROWS, PRIMAL_TOLERANCE, _QuietHighs
from slate.sim.synthetic import SyntheticSpec, synthetic_scenario

Options = dict[str, bool | float | str | int]
SIZES = {"5x50": (5, 50, 2), "10x50": (10, 50, 3), "10x100": (10, 100, 3), "20x200": (20, 200, 3)}


@dataclass(frozen=True)
class Outcome:
    seconds: float
    x: FArray  # the primal solution in the solver's units of the original LP
    ipm: int
    simplex: int


def highs_lp(
    a: Matrix,
    cost: FArray,
    col_lo: FArray,
    col_hi: FArray,
    row_lo: FArray,
    row_hi: FArray,
) -> highspy.HighsLp:
    m, n = a.shape
    start, index, value = a.csc()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, m
    lp.col_cost_ = np.ascontiguousarray(cost, dtype=float)
    lp.col_lower_ = np.ascontiguousarray(col_lo, dtype=float)
    lp.col_upper_ = np.ascontiguousarray(col_hi, dtype=float)
    lp.row_lower_ = np.ascontiguousarray(row_lo, dtype=float)
    lp.row_upper_ = np.ascontiguousarray(row_hi, dtype=float)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, m
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = start, index, value
    return lp


def run_highs(lp: highspy.HighsLp, options: Options) -> tuple[float, highspy.Highs]:
    h = _QuietHighs()  # type: ignore[no-untyped-call]
    h.setOptionValue("primal_feasibility_tolerance", PRIMAL_TOLERANCE)
    for name, value in options.items():
        h.setOptionValue(name, value)
    h.passModel(lp)
    t = time.perf_counter()
    h.run()
    seconds = time.perf_counter() - t
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise SystemExit(f"HiGHS: {h.modelStatusToString(h.getModelStatus())} ({options})")
    return seconds, h


def primal(form: SolverForm, options: Options) -> Callable[[], Outcome]:
    b = np.asarray(form.b_eq, dtype=float)
    lp = highs_lp(form.a_eq, form.c, form.bounds[:, 0], form.bounds[:, 1], b, b)

    def go() -> Outcome:
        seconds, h = run_highs(lp, options)
        info = h.getInfo()
        x = np.asarray(h.getSolution().col_value, dtype=float)
        return Outcome(seconds, x, int(info.ipm_iteration_count), int(info.simplex_iteration_count))

    return go


def geo_scaled(form: SolverForm, options: Options, passes: int = 4) -> Callable[[], Outcome]:
    a = form.a_eq
    m, n = a.shape
    row, col = np.ones(m), np.ones(n)
    for _ in range(passes):
        for by, scale, size in ((a.rows, row, m), (a.cols, col, n)):
            v = np.abs(a.vals) * row[a.rows] * col[a.cols]
            hi, lo = np.zeros(size), np.full(size, np.inf)
            np.maximum.at(hi, by, v)
            np.minimum.at(lo, by, v)
            scale /= np.sqrt(np.where(hi > 0, hi * lo, 1.0))
    r2: FArray = np.exp2(np.round(np.log2(row)))
    c2: FArray = np.exp2(np.round(np.log2(col)))
    scaled = replace(
        form,
        a_eq=a.scaled(r2, c2),
        b_eq=form.b_eq * r2,
        c=form.c * c2,
        bounds=form.bounds / c2[:, None],
    )
    inner = primal(scaled, options)

    def go() -> Outcome:
        out = inner()
        return replace(out, x=out.x * c2)

    return go


def explicit_dual(form: SolverForm, solver: str) -> Callable[[], Outcome]:
    """min c x, A x = b, lo <= x <= hi (lo finite) has the dual
    max (b - A lo)' pi - (hi - lo)' s + c' lo, A' pi - s <= c (s on the columns with finite hi),
    solved here as a minimisation; x is minus the row duals."""
    a = form.a_eq
    m, n = a.shape
    lo, hi = form.bounds[:, 0], form.bounds[:, 1]
    finite = np.flatnonzero(np.isfinite(hi))
    k = len(finite)
    dual_a = Matrix(
        np.concatenate([a.cols, finite]),
        np.concatenate([a.rows, m + np.arange(k, dtype=np.int64)]),
        np.concatenate([a.vals, -np.ones(k)]),
        (n, m + k),
    )
    a_lo = np.bincount(a.rows, weights=a.vals * lo[a.cols], minlength=m)
    lp = highs_lp(
        dual_a,
        np.concatenate([-(form.b_eq - a_lo), (hi - lo)[finite]]),
        np.concatenate([np.full(m, -math.inf), np.zeros(k)]),
        np.full(m + k, math.inf),
        np.full(n, -math.inf),
        form.c,
    )

    def go() -> Outcome:
        seconds, h = run_highs(lp, {"solver": solver})
        info = h.getInfo()
        x = -np.asarray(h.getSolution().row_dual, dtype=float)
        residual = np.bincount(a.rows, weights=a.vals * x[a.cols], minlength=m) - form.b_eq
        if np.abs(residual).max() > 1e-6 or (lo - x).max() > 1e-6 or (x - hi).max() > 1e-6:
            raise SystemExit(f"dual-{solver}: the primal read back from the duals is infeasible")
        return Outcome(seconds, x, int(info.ipm_iteration_count), int(info.simplex_iteration_count))

    return go


def variants(form: SolverForm) -> dict[str, Callable[[], Outcome]]:
    ipm: Options = {"solver": "ipm" if form.a_eq.shape[0] >= IPM_ROWS else "simplex"}
    return {
        "default": primal(form, ipm),
        "no-crossover": primal(form, {**ipm, "run_crossover": "off"}),
        "ipm-tol-1e-6": primal(
            form, {**ipm, "run_crossover": "off", "ipm_optimality_tolerance": 1e-6}
        ),
        "ipm-tol-1e-5": primal(
            form, {**ipm, "run_crossover": "off", "ipm_optimality_tolerance": 1e-5}
        ),
        "ipx-dualize-0": primal(form, {**ipm, "ipx_dualize_strategy": 0}),
        "ipx-dualize-1": primal(form, {**ipm, "ipx_dualize_strategy": 1}),
        "ipx-dualize-3": primal(form, {**ipm, "ipx_dualize_strategy": 3}),
        "bound-scale+3": primal(form, {**ipm, "user_bound_scale": 3}),
        "bound-scale-3": primal(form, {**ipm, "user_bound_scale": -3}),
        "cost-scale-6": primal(form, {**ipm, "user_objective_scale": -6}),
        "simplex": primal(form, {"solver": "simplex"}),
        "simplex-scale0": primal(form, {"solver": "simplex", "simplex_scale_strategy": 0}),
        "simplex-scale4": primal(form, {"solver": "simplex", "simplex_scale_strategy": 4}),
        "geo-scaled": geo_scaled(form, ipm),
        "dual-ipm": explicit_dual(form, "ipm"),
        "dual-simplex": explicit_dual(form, "simplex"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="10x100", choices=sorted(SIZES))
    p.add_argument("--generator", default="everywhere", choices=("partial", "everywhere"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--utilization", type=float, default=0.6)
    p.add_argument("--cost-weight", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--variants",
        default="default,no-crossover,bound-scale+3,bound-scale-3,cost-scale-6,simplex,"
        "simplex-scale0,simplex-scale4,geo-scaled,dual-ipm",
        help="comma-separated (dual-simplex takes minutes at 10x100)",
    )
    args = p.parse_args(argv)
    c, s, e = SIZES[args.case]
    spec = SyntheticSpec(
        clusters=c,
        services=s,
        endpoints_per_service=e,
        everywhere=args.generator == "everywhere",
        seed=args.seed,
        target_utilization=args.utilization,
        cost_weight=args.cost_weight,
    )
    scenario = synthetic_scenario(spec)
    latency = scenario.latency_model()
    short = shortfalls(scenario, latency)
    caps = {x.service: x.min_utilization * (1 + 1e-7) for x in short}
    unpriced = {x.service for x in short if x.min_utilization >= 1.0}
    form = build(scenario, latency, caps, unpriced).program().for_solver()
    every = variants(form)
    names = [n for n in args.variants.split(",") if n]
    if unknown := [n for n in names if n not in every]:
        p.error(f"unknown variant: {', '.join(unknown)} (known: {', '.join(every)})")
    if "default" not in names:
        names.insert(0, "default")
    print(
        f"# lp_variants: {args.case} {args.generator}, {form.a_eq.shape[0]} rows, "
        f"{form.a_eq.shape[1]} columns; {args.runs} interleaved run(s)",
        flush=True,
    )
    times: dict[str, list[float]] = {n: [] for n in names}
    last: dict[str, Outcome] = {}
    for run in range(args.runs):
        for name in names:
            last[name] = every[name]()
            times[name].append(last[name].seconds)
            print(f"#   run {run + 1} {name}: {last[name].seconds:.2f} s", file=sys.stderr)
    base_t = statistics.median(times["default"])
    base_obj = float(form.c @ last["default"].x)
    print("| variant | median s | best s | median / default | ipm it | simplex it | obj diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        out, med = last[name], statistics.median(times[name])
        diff = (float(form.c @ out.x) - base_obj) / abs(base_obj)
        print(
            f"| {name} | {med:.2f} | {min(times[name]):.2f} | {med / base_t:.2f} | {out.ipm} "
            f"| {out.simplex} | {diff:.1e} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
