"""slate/optimizer/highs.py: HiGHS through highspy, silent on stdout, statuses mapped to errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slate.optimizer.errors import InfeasibleError
from slate.optimizer.formulation import Matrix, SolverForm
from slate.optimizer.highs import solve_lp


def _dense(a: np.ndarray) -> Matrix:
    rows, cols = np.nonzero(a)
    return Matrix(rows, cols, a[rows, cols], a.shape)


def _form(b_eq: float, upper: float, a_ub: bool = False) -> SolverForm:
    """min x0 + 2 x1  s.t.  x0 + x1 = b_eq,  0 <= x0 <= upper, 0 <= x1 (and x0 - x1 <= 0)."""
    return SolverForm(
        c=np.array([1.0, 2.0]),
        a_eq=_dense(np.array([[1.0, 1.0]])),
        b_eq=np.array([b_eq]),
        a_ub=_dense(np.array([[1.0, -1.0]])) if a_ub else None,
        b_ub=np.array([0.0]) if a_ub else None,
        bounds=np.array([[0.0, upper], [0.0, math.inf]]),
        col_scale=np.ones(2),
        cost_unit=1.0,
    )


def test_solves_and_prints_nothing_on_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    """highspy's Highs() prints a banner on fd 1 unless told not to: `slate solve` prints JSON
    there, so not one byte may come from HiGHS (checked at the file descriptor)."""
    res = solve_lp(_form(3.0, 1.0))
    assert res.x == pytest.approx([1.0, 2.0])
    assert res.objective == pytest.approx(5.0)
    out, err = capfd.readouterr()
    assert out == ""
    assert "HiGHS" not in err


def test_inequality_rows_hold() -> None:
    res = solve_lp(_form(3.0, 5.0, a_ub=True))  # x0 <= x1 now binds
    assert res.x == pytest.approx([1.5, 1.5])
    assert res.objective == pytest.approx(4.5)


def test_matrix_csc_sums_entries_at_one_place_and_scales() -> None:
    m = Matrix(
        np.array([1, 0, 1, 0]), np.array([2, 0, 2, 2]), np.array([1.0, 2.0, 3.0, 4.0]), (2, 3)
    )
    start, index, value = m.csc()
    assert start.tolist() == [0, 1, 1, 3]
    assert index.tolist() == [0, 0, 1]
    assert value.tolist() == [2.0, 4.0, 4.0]
    assert m.dense().tolist() == [[2.0, 0.0, 4.0], [0.0, 0.0, 4.0]]
    scaled = m.scaled(np.array([1.0, 10.0]), np.array([1.0, 1.0, 0.5]))
    assert scaled.dense().tolist() == [[2.0, 0.0, 2.0], [0.0, 0.0, 20.0]]
    both = m.stacked(m)
    assert both.shape == (4, 3)
    assert both.dense()[2:].tolist() == m.dense().tolist()


def test_infeasible_is_an_infeasible_error() -> None:
    with pytest.raises(InfeasibleError, match="admit no routing"):
        solve_lp(_form(-1.0, 1.0))
