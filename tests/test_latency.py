"""M/M/c station model: against closed forms, its slope against finite differences, convexity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slate.model.latency import (
    EXACT_UP_TO,
    MAX_REPLICAS,
    MMcStation,
    _erlang_c_and_derivative,
    _erlang_c_recursion,
    erlang_c,
)


def erlang_c_closed_form(c: int, a: float) -> float:
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("c", [1, 2, 3, 7, 20])
@pytest.mark.parametrize("rho", [0.05, 0.5, 0.9, 0.99])
def test_erlang_c_matches_closed_form(c: int, rho: float) -> None:
    assert erlang_c(c, c * rho) == pytest.approx(erlang_c_closed_form(c, c * rho), rel=1e-9)


def test_mm1_queue_cost_is_rho_squared_over_one_minus_rho() -> None:
    s = MMcStation(1)
    for rho in (0.1, 0.5, 0.8):
        assert s.queue_cost(1000 * rho) == pytest.approx(1000 * rho**2 / (1 - rho))


def test_saturation_is_infinite() -> None:
    s = MMcStation(3)
    assert s.capacity == 3000
    assert math.isinf(s.queue_cost(3000)) and math.isinf(s.queue_cost(4000))
    assert s.queue_cost(0) == 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 64), st.floats(0.01, 0.97))
def test_slope_matches_finite_difference(c: int, rho: float) -> None:
    s = MMcStation(c)
    w = rho * s.capacity
    h = 1e-5 * s.capacity
    numeric = (s.queue_cost(w + h) - s.queue_cost(w - h)) / (2 * h)
    assert s.queue_slope(w) == pytest.approx(numeric, rel=1e-4, abs=1e-9)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 64), st.floats(0.0, 0.97), st.floats(0.0, 0.97))
def test_tangents_never_cut_above_the_curve(c: int, rho_a: float, rho_b: float) -> None:
    """Convexity, as the LP relies on it: a tangent at any point stays below the cost."""
    s = MMcStation(c)
    wa, wb = rho_a * s.capacity, rho_b * s.capacity
    tangent = s.queue_cost(wa) + s.queue_slope(wa) * (wb - wa)
    assert tangent <= s.queue_cost(wb) * (1 + 1e-9) + 1e-9


@pytest.mark.parametrize("c", [EXACT_UP_TO + 1, 100, 1000, 20_000])
@pytest.mark.parametrize("rho", [0.001, 0.3, 0.8, 0.95, 0.999, 1 - 1e-7])
def test_closed_form_beyond_the_recursion_agrees_with_it(c: int, rho: float) -> None:
    """Above EXACT_UP_TO replicas Erlang C comes from the Poisson closed form: the recursion,
    exact but linear in c, is the reference."""
    exact = _erlang_c_recursion(c, c * rho)
    fast = _erlang_c_and_derivative(c, c * rho)
    assert fast[0] == pytest.approx(exact[0], rel=1e-11, abs=1e-300)
    assert fast[1] == pytest.approx(exact[1], rel=1e-11, abs=1e-300)


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0])
def test_a_billion_replicas_meet_the_halfin_whitt_limit(beta: float) -> None:
    """c = 10^9 (no loop over replicas: the old recursion took minutes here), at
    rho = 1 - beta / sqrt(c): Erlang C tends to 1 / (1 + beta Phi(beta) / phi(beta)), with an
    error of order 1 / sqrt(c)."""
    c = 10**9
    rho = 1 - beta / math.sqrt(c)
    phi = math.exp(-(beta**2) / 2) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(beta / math.sqrt(2)))
    assert erlang_c(c, c * rho) == pytest.approx(1 / (1 + beta * big_phi / phi), rel=1e-3)
    s = MMcStation(c)
    assert math.isfinite(s.queue_cost(rho * s.capacity)) and s.queue_slope(rho * s.capacity) > 0


def test_replicas_are_bounded() -> None:
    MMcStation(MAX_REPLICAS)
    for bad in (0, -1, MAX_REPLICAS + 1, 10**400):
        with pytest.raises(ValueError, match="replicas must be in"):
            MMcStation(bad)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(EXACT_UP_TO + 1, 10**6), st.floats(0.01, 0.97))
def test_slope_matches_finite_difference_for_large_stations(c: int, rho: float) -> None:
    s = MMcStation(c)
    w = rho * s.capacity
    h = 1e-6 * s.capacity * (1 - rho)
    numeric = (s.queue_cost(w + h) - s.queue_cost(w - h)) / (2 * h)
    assert s.queue_slope(w) == pytest.approx(numeric, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("c", [1, 2, 3, 8, 32, EXACT_UP_TO, EXACT_UP_TO + 1, 500])
def test_costs_and_slopes_at_many_points_are_queue_cost_and_queue_slope(c: int) -> None:
    """The optimizer's first tangents come from the batch; they must be the scalar curve's."""
    m = MMcStation(c)
    works = [0.0, 1e-9, *(m.capacity * r for r in (0.1, 0.5, 0.9, 0.999, 1.0, 1.5))]
    costs, slopes = m.costs_and_slopes(works)
    for w, q, g in zip(works, costs, slopes, strict=True):
        if w >= m.capacity:
            assert math.isinf(q) and math.isinf(g)
            continue
        assert q == pytest.approx(m.queue_cost(w), rel=1e-13, abs=1e-300)
        assert g == pytest.approx(m.queue_slope(w), rel=1e-13, abs=1e-300)
