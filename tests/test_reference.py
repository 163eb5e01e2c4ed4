"""Every policy against the independently computed figures in examples/scenarios/REFERENCE.md."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from slate.model.scenario_file import load_scenario
from slate.optimizer.solve import run_policy

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
TOLERANCE = 0.005  # the 0.5%


def _reference() -> dict[tuple[str, str], dict[str, float]]:
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for line in (SCENARIOS / "REFERENCE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not (SCENARIOS / f"{cells[0]}.yaml").exists():
            continue
        name, policy, latency, egress, util, objective = cells

        def num(s: str) -> float:
            return math.inf if s == "overload" else float(s)

        bound = re.search(r"bound ([\d.]+)", objective)
        rows[(name, policy)] = {
            "mean_latency_ms": num(latency),
            "egress_usd_per_hour": num(egress),
            "max_utilization": num(util),
            "objective": num(objective.split()[0]),
            "bound": float(bound.group(1)) if bound else math.nan,
        }
    return rows


REFERENCE = _reference()


def test_reference_table_was_read() -> None:
    names = {p.stem for p in SCENARIOS.glob("*.yaml")}
    assert {n for n, _ in REFERENCE} == names
    assert len(REFERENCE) == 4 * len(names)


def _close(got: float, want: float, rel: float = TOLERANCE, abs_: float = 0.0) -> bool:
    if math.isinf(want):
        return math.isinf(got)
    return abs(got - want) <= max(rel * abs(want), abs_)


@pytest.mark.parametrize(
    ("name", "policy"),
    sorted(k for k in REFERENCE if k[1] != "optimum"),
    ids=lambda v: str(v),
)
def test_baseline_matches_reference(name: str, policy: str) -> None:
    want = REFERENCE[(name, policy)]
    ev = run_policy(load_scenario(SCENARIOS / f"{name}.yaml"), policy).evaluation  # type: ignore[arg-type]
    assert _close(ev.mean_latency_ms, want["mean_latency_ms"])
    # The table prints egress to 3 decimals: allow that rounding on top of 0.5%.
    assert _close(ev.egress_usd_per_hour, want["egress_usd_per_hour"], abs_=0.0005)
    assert _close(ev.max_utilization, want["max_utilization"], abs_=0.0005)


@pytest.mark.parametrize("name", sorted({n for n, _ in REFERENCE}))
def test_optimum_within_half_percent_of_reference_bound(name: str) -> None:
    want = REFERENCE[(name, "optimum")]
    result = run_policy(load_scenario(SCENARIOS / f"{name}.yaml"), "optimal")
    ev = result.evaluation
    assert ev.feasible and not result.shortfalls
    assert abs(ev.objective - want["bound"]) <= TOLERANCE * want["bound"]
    assert (
        ev.max_utilization
        <= load_scenario(SCENARIOS / f"{name}.yaml").objective.max_utilization + 1e-6
    )
    # Our own LP bound brackets our evaluated objective, and is a lower bound near the reference's.
    assert result.bound is not None
    assert result.bound <= ev.objective + 1e-9
    assert abs(result.bound - want["bound"]) <= TOLERANCE * want["bound"]
