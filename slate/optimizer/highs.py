"""HiGHS through its own Python API (highspy), for the LPs of formulation.py.

Why highspy and not `scipy.optimize.linprog(method="highs")`, which runs the same solver:
start-up. `import scipy.optimize` alone took 0.45 s of `slate solve`'s 0.69 s (bench/startup.py,
quiet machine); `import highspy` takes 0.11 s, numpy included. The LP's matrices are numpy
triplets (formulation.Matrix), so `slate solve` imports no scipy at all.

highspy's `Highs()` prints HiGHS's banner on stdout while it installs its Python callbacks, before
any option can be set, and `slate solve` prints JSON on stdout. `_QuietHighs` turns the output off
first: `enableCallbacks()` is where the banner comes from (highspy 1.16), so it sets
`output_flag = False` before calling it. No file descriptor is redirected (another thread's
output would be lost). tests/test_highs.py checks that nothing reaches fd 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import highspy
import numpy as np

from slate.optimizer.errors import InfeasibleError, SolveError
from slate.optimizer.formulation import FArray, SolverForm

IPM_ROWS = 2000
"""From this many rows on, HiGHS's interior point method (with crossover, so the solution is still a
vertex) beats its dual simplex on these LPs; below, the simplex is faster."""

PRIMAL_TOLERANCE = 1e-9
"""HiGHS's feasibility tolerance in the solver's units (Program.for_solver: values near 1). Its
default, 1e-7, is the margin a service that cannot fit gets above its least utilization (solve()
caps it at that x (1 + 1e-7)): presolve then calls the LP infeasible."""


class _QuietHighs(highspy.Highs):
    """highspy.Highs without the banner on stdout (module docstring)."""

    def enableCallbacks(self) -> None:
        self.setOptionValue("output_flag", False)
        super().enableCallbacks()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class LPResult:
    x: FArray  # in the solver's units (SolverForm)
    objective: float  # c' x', the solver's units
    iterations: int  # simplex + interior point iterations


def solve_lp(form: SolverForm) -> LPResult:
    """Minimise form.c x subject to form's rows and bounds, from scratch. Raises InfeasibleError
    when no x satisfies them, SolveError when HiGHS fails.

    No warm start: starting from the last interval's optimal basis was measured in the control
    loop at 10 clusters x 100 services (bench/loop.py's app) and did not pay: 1,900-5,100 dual
    simplex iterations, 1.4-6.4 s, against 38-46 interior point iterations, 1.4-1.9 s, from
    scratch (the fitted curves move every tangent piece, and the optimum moves between
    near-equal vertices)."""
    a = form.a_eq
    if form.a_ub is not None and form.b_ub is not None:
        a = a.stacked(form.a_ub)
        lower = np.concatenate([form.b_eq, np.full(len(form.b_ub), -math.inf)])
        upper = np.concatenate([form.b_eq, form.b_ub])
    else:
        lower = upper = np.asarray(form.b_eq, dtype=float)
    m, n = a.shape
    start, index, value = a.csc()
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = m
    lp.col_cost_ = np.ascontiguousarray(form.c, dtype=float)
    lp.col_lower_ = np.ascontiguousarray(form.bounds[:, 0], dtype=float)
    lp.col_upper_ = np.ascontiguousarray(form.bounds[:, 1], dtype=float)
    lp.row_lower_ = np.ascontiguousarray(lower, dtype=float)
    lp.row_upper_ = np.ascontiguousarray(upper, dtype=float)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = n
    lp.a_matrix_.num_row_ = m
    lp.a_matrix_.start_ = start
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value

    h = _QuietHighs()  # type: ignore[no-untyped-call]
    h.setOptionValue("primal_feasibility_tolerance", PRIMAL_TOLERANCE)
    h.setOptionValue("solver", "ipm" if m >= IPM_ROWS else "simplex")
    if h.passModel(lp) == highspy.HighsStatus.kError:
        raise SolveError("HiGHS refused the LP (passModel)")
    h.run()
    status = h.getModelStatus()
    if status in (
        highspy.HighsModelStatus.kInfeasible,
        highspy.HighsModelStatus.kUnboundedOrInfeasible,
    ):
        # No cost is negative, so the LP is never unbounded: it is infeasible.
        raise InfeasibleError(
            "the work bounds and route constraints together admit no routing "
            f"(HiGHS: {h.modelStatusToString(status)})"
        )
    if status != highspy.HighsModelStatus.kOptimal:
        raise SolveError(f"HiGHS: {h.modelStatusToString(status)}")
    info = h.getInfo()
    return LPResult(
        x=np.asarray(h.getSolution().col_value, dtype=float),
        objective=float(info.objective_function_value),
        iterations=int(info.simplex_iteration_count) + int(info.ipm_iteration_count),
    )
