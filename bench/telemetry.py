"""Simulated telemetry and its observation: what one control interval costs before learning.

Run from the repository root:

    .venv/bin/python bench/telemetry.py            # public scenarios and 10 clusters x 100 services
    .venv/bin/python bench/telemetry.py --quick    # public scenarios only

Per scenario (optimal routing in force, no histogram buckets, 15 s scrapes): the simulator's cost
per scrape; the cost of `Observer.observe` (30 min lookback on a 30 s grid, 2 min window) the first
time (cold: every point of every range query computed) and one interval (30 s) later (warm: the
MemoryBackend reuses the answers at times it already evaluated), CPU and wall, best of a few; and
the ratio warm/cold measured in the same run. Figures only; it never fails on a timer.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "telemetry"))

from policy_stub import policy_for

from slate.model.scenario import Scenario
from slate.model.scenario_file import load_scenario
from slate.optimizer.solve import solve
from slate.sim.istio_metrics import IstioMetrics
from slate.sim.synthetic import SyntheticSpec, synthetic_scenario
from slate.telemetry.memory import MemoryBackend
from slate.telemetry.observe import Observer

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_760_000_000.0
SCRAPE_S = 15.0
INTERVAL_S = 30.0


def bench(sc: Scenario, repeats: int) -> dict[str, float]:
    gen = IstioMetrics(sc, solve(sc).routing, namespace="shop", buckets=False)
    store = MemoryBackend()
    t = time.perf_counter()
    n = gen.run(store, T0, T0 + 1800, SCRAPE_S)
    scrape_ms = (time.perf_counter() - t) / n * 1000
    pol = policy_for(sc)
    end = T0 + 1800
    cold_cpu = cold_wall = warm_cpu = warm_wall = float("inf")
    for _ in range(repeats):
        ob = Observer(store, lookback_s=1800, step_s=30)
        store.forget_answers()  # cold
        c, w = time.process_time(), time.perf_counter()
        obs = ob.observe(pol, datetime.fromtimestamp(end, UTC))
        cold_cpu = min(cold_cpu, time.process_time() - c)
        cold_wall = min(cold_wall, time.perf_counter() - w)
        gen.run(store, end + SCRAPE_S, end + INTERVAL_S, SCRAPE_S)
        end += INTERVAL_S
        c, w = time.process_time(), time.perf_counter()
        obs = ob.observe(pol, datetime.fromtimestamp(end, UTC))
        warm_cpu = min(warm_cpu, time.process_time() - c)
        warm_wall = min(warm_wall, time.perf_counter() - w)
    series = len(store.series("istio_requests_total"))
    return {
        "stations": len(obs.stations),
        "series": series,
        "scrape_ms": scrape_ms,
        "cold_cpu": cold_cpu,
        "cold_wall": cold_wall,
        "warm_cpu": warm_cpu,
        "warm_wall": warm_wall,
        "problems": len(obs.problems),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="public scenarios only")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} (shared machine: wall times are noisy)"
    )
    cases: list[tuple[str, Scenario]] = [
        (p.stem, load_scenario(p)) for p in sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
    ]
    if not args.quick:
        cases.append(
            (
                "synthetic-10c-100s",
                synthetic_scenario(SyntheticSpec(clusters=10, services=100, seed=1)),
            )
        )
    head = (
        f"{'scenario':<20} {'stations':>8} {'series':>7} {'scrape ms':>9} "
        f"{'cold cpu s':>10} {'cold wall':>9} {'warm cpu s':>10} {'warm wall':>9} "
        f"{'warm/cold':>9} {'problems':>8}"
    )
    print(head)
    for name, sc in cases:
        r = bench(sc, args.repeats)
        print(
            f"{name:<20} {r['stations']:>8.0f} {r['series']:>7.0f} {r['scrape_ms']:>9.2f} "
            f"{r['cold_cpu']:>10.3f} {r['cold_wall']:>9.3f} {r['warm_cpu']:>10.3f} "
            f"{r['warm_wall']:>9.3f} {r['warm_cpu'] / r['cold_cpu']:>9.2f} {r['problems']:>8.0f}"
        )


if __name__ == "__main__":
    main()
