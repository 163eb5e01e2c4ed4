"""The endpoint call graph from inbound and outbound rate series, with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from slate.learn.callgraph import CallEstimate, drop_cycles, fit_calls


def test_multiplicities_of_separable_endpoints() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(50, 200, size=(40, 2))  # home, product move independently
    m = np.array([[1.0, 4.0], [0.0, 2.0]])  # home -> (catalog 1, currency 4); product -> currency 2
    y = x @ m
    y = rng.poisson(y * 30) / 30  # Poisson noise of a 30 s window
    est = {(e.frm, e.to): e for e in fit_calls(x, y, ["home", "product"], ["cat", "cur"])}
    assert est[("home", "cat")].per_request == pytest.approx(1.0, rel=0.03)
    assert est[("home", "cur")].per_request == pytest.approx(4.0, rel=0.03)
    assert est[("product", "cur")].per_request == pytest.approx(2.0, rel=0.03)
    assert ("product", "cat") not in est
    assert all(e.separable and e.confidence > 0.9 for e in est.values())


def test_endpoints_moving_together_are_attributed_in_proportion_and_flagged() -> None:
    base = np.linspace(100, 300, 30)
    x = np.column_stack([base, 3 * base])  # b is always 3 x a: no way to tell them apart
    y = x @ np.array([[1.0], [3.0]])  # truth a->1, b->3: total 10 * base
    est = fit_calls(x, y, ["a", "b"], ["d"])
    assert {e.frm for e in est} == {"a", "b"}
    for e in est:
        assert not e.separable
        assert e.per_request == pytest.approx(10 * 1 / 4, rel=1e-6)  # 10 base / 4 base of inbound
        assert e.confidence <= 0.5
    # In proportion to rates: calls attributed to a = 2.5 * base, to b = 7.5 * base (sum 10 * base).


def test_noise_only_gives_low_confidence() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(50, 200, size=(30, 1))
    y = rng.uniform(0, 100, size=(30, 1))
    est = fit_calls(x, y, ["a"], ["d"])
    assert all(e.confidence < 0.5 for e in est)


def test_drop_cycles_keeps_the_surer_edge() -> None:
    edges = [
        CallEstimate("a.x", "b.y", 1.0, 0.9, True),
        CallEstimate("b.y", "a.x", 0.01, 0.2, True),
        CallEstimate("b.y", "c.z", 2.0, 0.9, True),
    ]
    kept = drop_cycles(edges)
    assert [(e.frm, e.to) for e in kept] == [("a.x", "b.y"), ("b.y", "c.z")]
