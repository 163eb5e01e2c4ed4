"""Acceptance of the closed loop (issue 6, closed-loop.md): every public scenario and generated
apps, truth mmc and distorted, --max-shift 0.1, from local routing.

Criteria: the objective is within 5% of the truth's optimum by interval 15 and stays there; a
x1.3 demand step at one cluster is re-converged within 15 intervals; no interval moves a weight
by more than the max shift; after convergence no weight reverses direction more than twice.
Cases that miss the first criterion today are strict xfails with the measured figure, so they
fail loudly the day they pass.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest

from slate.cli import main
from slate.model.scenario import Scenario
from slate.model.scenario_file import load_scenario
from slate.sim.closed_loop import ClosedLoopResult, DemandStep, Truth, run_closed_loop
from slate.sim.synthetic import SyntheticSpec, synthetic_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "examples/scenarios").glob("*.yaml"))
TOLERANCE = 0.05
BY = 15
MAX_SHIFT = 0.1


def converged_at(result: ClosedLoopResult, start: int = 0) -> int | None:
    """The first interval from which every interval's objective is within TOLERANCE."""
    gaps = [r.gap for r in result.rows[start:]]
    for i in range(len(gaps)):
        if all(g is not None and g <= TOLERANCE for g in gaps[i:]):
            return start + i
    return None


def reversals_after(result: ClosedLoopResult, start: int) -> int:
    """The most times any single weight changes direction from interval `start` on."""
    series: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for row in result.rows[start:]:
        for r in row.routes.routes:
            for c, w in r.normalized().items():
                series[(*r.key, c)].append(w)
    worst = 0
    for values in series.values():
        steps = [b - a for a, b in itertools.pairwise(values) if abs(b - a) > 1e-6]
        signs = [1 if d > 0 else -1 for d in steps]
        worst = max(worst, sum(1 for a, b in itertools.pairwise(signs) if a != b))
    return worst


def check_shift(result: ClosedLoopResult) -> None:
    for row in result.rows:
        assert row.max_weight_shift <= MAX_SHIFT + 1e-6, (row.interval, row.max_weight_shift)


# Measured misses at seed 1, 25 intervals (docs/control.md, "Known gaps"): none today. A case
# that misses goes here as a strict xfail with its measured figure. The figures also move with the
# simulator's random draws: bench/acceptance.py runs these cases over many seeds (a no-op
# reordering of the draws once took seeds 1-3 from 24 to 26 of 30).
MISSES: dict[tuple[str, str], str] = {}
SYNTHETIC_MISSES: dict[tuple[int, str], str] = {}


def _case(path: Path, truth: str) -> object:
    miss = MISSES.get((path.stem, truth))
    marks = [pytest.mark.slow]
    if miss:
        marks.append(pytest.mark.xfail(strict=True, reason=miss))
    return pytest.param(path, truth, marks=marks, id=f"{path.stem}-{truth}")


@pytest.mark.parametrize(
    ("path", "truth"), [_case(p, t) for p in SCENARIOS for t in ("mmc", "distorted")]
)
def test_public_scenarios_converge(path: Path, truth: Truth) -> None:
    result = run_closed_loop(load_scenario(path), intervals=25, truth=truth, max_shift=MAX_SHIFT)
    check_shift(result)
    at = converged_at(result)
    assert at is not None and at <= BY, [r.gap for r in result.rows]
    assert reversals_after(result, at) <= 2


def _synthetic(seed: int) -> Scenario:
    return synthetic_scenario(SyntheticSpec(clusters=3, services=8, seed=seed))


def _synthetic_case(seed: int, truth: str) -> object:
    miss = SYNTHETIC_MISSES.get((seed, truth))
    marks = [pytest.mark.slow]
    if miss:
        marks.append(pytest.mark.xfail(strict=True, reason=miss))
    return pytest.param(seed, truth, marks=marks, id=f"seed{seed}-{truth}")


@pytest.mark.parametrize(
    ("seed", "truth"), [_synthetic_case(s, t) for s in (0, 1) for t in ("mmc", "distorted")]
)
def test_generated_apps_converge(seed: int, truth: Truth) -> None:
    result = run_closed_loop(_synthetic(seed), intervals=25, truth=truth, max_shift=MAX_SHIFT)
    check_shift(result)
    at = converged_at(result)
    assert at is not None and at <= BY, [r.gap for r in result.rows]
    assert reversals_after(result, at) <= 2


@pytest.mark.slow
def test_demand_step_is_reconverged() -> None:
    scenario = load_scenario(ROOT / "examples/scenarios/alibaba-3r.yaml")
    cluster = scenario.topology.clusters[0]
    step_at = 20
    result = run_closed_loop(
        scenario,
        intervals=step_at + 16,
        truth="mmc",
        demand_steps=[DemandStep(step_at, cluster, 1.3)],
        max_shift=MAX_SHIFT,
    )
    check_shift(result)
    assert result.rows[step_at].optimum_objective != result.rows[step_at - 1].optimum_objective
    at = converged_at(result, step_at)
    assert at is not None and at <= step_at + 15, [r.gap for r in result.rows[step_at:]]


@pytest.mark.slow
def test_a_stalled_rollout_restarts(caplog: pytest.LogCaptureFixture) -> None:
    """hotel-3r distorted, simulator seed 3: from interval 12 the learned model puts the target
    ~7% better than the weights in force, but one key's step has been damped below the deadband
    (its moves kept turning back), so no step towards the target helps and the loop used to hold
    10.3% from the optimum to the end. After STALL_INTERVALS such intervals the damping restarts
    and the loop converges."""
    scenario = load_scenario(ROOT / "examples/scenarios/hotel-3r.yaml")
    with caplog.at_level("INFO", logger="slate.control.loop"):
        result = run_closed_loop(
            scenario, intervals=25, truth="distorted", max_shift=MAX_SHIFT, seed=3
        )
    check_shift(result)
    assert any("rollout_restarted" in r.getMessage() for r in caplog.records)
    # The status says so too (Applied's message, reason unchanged).
    said = [r.conditions["Applied"] for r in result.reports]
    said = [c for c in said if "rollout restarted" in c.message]
    assert said and all(c.reason == "RollingOut" for c in said)
    assert sum(r.rollout_restarted for r in result.reports) == len(said)
    final = result.rows[-1].gap
    assert final is not None and final <= TOLERANCE, [r.gap for r in result.rows]
    at = converged_at(result)
    assert at is not None and reversals_after(result, at) <= 2


def test_cli_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "simulate",
            str(ROOT / "examples/scenarios/boutique-2r.yaml"),
            "--closed-loop",
            "--intervals",
            "2",
            "--format",
            "json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["scenario"], data["truth"], data["seed"], data["max_shift"]) == (
        "boutique-2r",
        "mmc",
        1,
        0.1,
    )
    row = data["intervals"][0]
    for key in (
        "interval",
        "objective",
        "mean_latency_ms",
        "egress_usd_per_hour",
        "max_utilization",
        "optimum_objective",
        "max_weight_shift",
        "exploring",
        "routes",
    ):
        assert key in row
    assert row["objective"] is None  # local routing overloads boutique-2r
    assert row["routes"][0].keys() >= {"from_service", "from_cluster", "to", "weights"}


def test_cli_bad_demand_step_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "examples/scenarios/boutique-2r.yaml")
    assert main(["simulate", path, "--closed-loop", "--demand-step", "3:mars:1.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mars" in err[0]
