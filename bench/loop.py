"""Per-interval time of the control loop, split into query, learn, solve and publish.

    python bench/loop.py [--intervals 3] [--big 10x100] [--skip-big]

Runs the closed-loop simulator (slate/sim/closed_loop.py: the truth writes Istio metrics into the
in-memory store, the loop queries them through the same parsing as Prometheus) on every public
scenario and on a generated app of CLUSTERSxSERVICES, and prints, per interval after the first
(which also pays for imports and caches), the seconds spent in each phase, with the share of the
whole. Publishing writes the route file atomically. The truth's own time (writing the metrics) is
not counted. Goal (issue 6): an interval under 1 s at 10 clusters x 100 services on 2 cores.
The machine running this may be shared: compare the phases against each other, not the absolute
figures against another run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from slate.control.publishers import RoutesFilePublisher
from slate.control.report import IntervalReport
from slate.model.scenario import Scenario
from slate.model.scenario_file import load_scenario
from slate.sim.closed_loop import INTERVAL_S, SCRAPE_S, START, make_loop
from slate.sim.synthetic import SyntheticSpec, synthetic_scenario

ROOT = Path(__file__).resolve().parents[1]


def bench(scenario: Scenario, intervals: int, out: Path) -> list[IntervalReport]:
    mesh, store, loop = make_loop(scenario)
    loop.publishers.append(RoutesFilePublisher(out))
    t = START.timestamp()
    reports = []
    for _ in range(intervals):
        mesh.run(store, t + SCRAPE_S, t + INTERVAL_S, SCRAPE_S)
        t += INTERVAL_S
        rep = loop.step(datetime.fromtimestamp(t, UTC))
        if rep.routes.routes:
            mesh.set_routing(rep.routes)
        reports.append(rep)
    return reports


def row(name: str, reports: list[IntervalReport], build_s: float) -> str:
    used = reports[1:] or reports
    q = statistics.median(r.timings.query_s for r in used)
    learn = statistics.median(r.timings.learn_s for r in used)
    solve = statistics.median(r.timings.solve_s for r in used)
    pub = statistics.median(r.timings.publish_s for r in used)
    total = q + learn + solve + pub
    other = statistics.median(
        max(
            r.timings.total_s
            - r.timings.query_s
            - r.timings.learn_s
            - r.timings.solve_s
            - r.timings.publish_s,
            0.0,
        )
        for r in used
    )
    share = " ".join(
        f"{k} {v / total:4.0%}"
        for k, v in (("query", q), ("learn", learn), ("solve", solve), ("publish", pub))
    )
    return (
        f"{name:22s} {q:7.3f} {learn:7.3f} {solve:7.3f} {pub:7.3f} {total:7.3f}   {share}"
        f"   (setup {build_s:.1f}s, unaccounted {other:.3f}s)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--intervals", type=int, default=3)
    ap.add_argument("--big", default="10x100", help="CLUSTERSxSERVICES of the generated app")
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args(argv)
    cases: list[tuple[str, Scenario]] = [
        (p.stem, load_scenario(p)) for p in sorted((ROOT / "examples/scenarios").glob("*.yaml"))
    ]
    if not args.skip_big:
        c, s = (int(x) for x in args.big.lower().split("x"))
        cases.append(
            (f"synthetic {c}x{s}", synthetic_scenario(SyntheticSpec(clusters=c, services=s)))
        )
    print(f"median seconds per interval over intervals 2..{args.intervals} (machine may be shared)")
    print(
        f"{'scenario':22s} {'query':>7s} {'learn':>7s} {'solve':>7s} {'publish':>7s} {'total':>7s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, scenario in cases:
            started = time.perf_counter()
            reports = bench(scenario, args.intervals, Path(tmp) / "routes.json")
            build = time.perf_counter() - started - sum(r.timings.total_s for r in reports)
            print(row(name, reports, build), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
