"""Per-interval time of the control loop, split into query, learn, solve and publish.

    python bench/loop.py [--intervals 3] [--big 10x100] [--skip-big] [--quick] [--history 30]
                         [--baseline REV] [--baseline-timeout S]
                         [--solve-mode inline|background|auto]

Runs the closed-loop simulator (slate/sim/closed_loop.py: the truth writes Istio metrics into the
in-memory store, the loop queries them through the same parsing as Prometheus) on every public
scenario and on a generated app of CLUSTERSxSERVICES, and prints, per interval after the first
(which also pays for imports and caches), the median wall seconds of each phase (the loop's own
Timings) and the CPU seconds of each phase (process CPU, every thread, HiGHS's included: the
query is `source.observe`, learning is `learn()`, publishing the publishers, solving the rest of
the interval). `lp` is the part of the solve inside HiGHS (wall) and `LPs` how many LPs the
interval solved; `mean` and `max` are the whole interval's wall seconds over the same intervals
(the median hides the intervals that solve more than one LP); `first interval` is the first one's
wall seconds, imports included. Publishing writes the route file
atomically. The truth's own time (writing the metrics) is not counted. Goal (issue 6): an
interval under 1 s at 10 clusters x 100 services.

`--history MIN` (default 30) first runs the truth for MIN minutes, so the measured intervals see
that much telemetry. The loop's 30 min lookback is then full, as in a loop that has run for half
an hour. Learning costs grow with it: each station's fit has one sample per 30 s of history, and
with `--history 0` (only the simulator's 5 min warm-up) the intervals measure a loop just
started, which is cheaper.

Every case runs in a subprocess of its own. `--baseline REV` also runs git revision REV's loop
(extracted with `git archive`) on the same cases, in the same run, interleaved case by case, and
prints REV's figures and this tree's over REV's (`x base`): the machine running this may be shared,
so compare ratios measured in one run, not absolute figures across runs.

`--solve-mode` sets this tree's ControlLoop.solve_mode (default inline, the ControlLoop's and the
baseline's). With `background` (the target LP solved in a worker thread from one interval's fits,
used by the next interval) or `auto` (`slate run`'s default: in the worker once a target solve
takes longer than 0.5 s), the phases are the interval's critical path, and `background solve` is
the worker's wall time, measured apart (the bench waits for it after each interval; `lp` and
`LPs` include its LPs, and CPU seconds only the part that overlapped the interval). In `auto`, an
interval whose own solve outlasts SOLVE_WAIT_S is held (the first one at 10 x 100): the bench
lists held intervals under the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("query", "learn", "solve", "publish")


def _cases(args: argparse.Namespace) -> list[str]:
    names = [p.stem for p in sorted((ROOT / "examples/scenarios").glob("*.yaml"))]
    if not args.skip_big and not args.quick:
        names.append(f"synthetic {args.big}")
    return names


def _scenario(name: str) -> Any:
    if name.startswith("synthetic "):
        from slate.sim.synthetic import SyntheticSpec, synthetic_scenario

        c, s = (int(x) for x in name.split()[1].lower().split("x"))
        return synthetic_scenario(SyntheticSpec(clusters=c, services=s))
    from slate.model.scenario_file import load_scenario

    return load_scenario(ROOT / "examples/scenarios" / f"{name}.yaml")


def worker(
    name: str, intervals: int, solve_mode: str = "inline", history_min: float = 0.0
) -> dict[str, Any]:
    """One case in this process (whatever `slate` is on sys.path): per interval, wall and CPU
    seconds per phase, the LPs solved and their wall time. With `history_min`, the truth first
    runs that many minutes under the starting routing, so the measured intervals see that much
    history (30: the whole lookback, as a loop that has run for half an hour does)."""
    import slate.control.loop as loop_mod
    import slate.optimizer.solve as solve_mod
    from slate.control.publishers import RoutesFilePublisher
    from slate.sim.closed_loop import INTERVAL_S, SCRAPE_S, START, make_loop

    started = time.perf_counter()
    scenario = _scenario(name)
    mesh, store, loop = make_loop(scenario)
    try:
        from slate.runtime import tune_gc
    except ImportError:  # a revision from before slate/runtime.py: CPython's GC defaults
        pass
    else:
        tune_gc()  # as `slate run` and `slate operator` do
    loop.solve_mode = solve_mode  # type: ignore[assignment]  # checked by argparse
    # A revision from before solve_mode had `background_solve` (and ignores the other).
    loop.background_solve = solve_mode == "background"  # type: ignore[attr-defined]
    cpu = dict.fromkeys(("query", "learn", "publish"), 0.0)
    lps: list[float] = []

    def timed(phase: str, fn: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                cpu[phase] += time.process_time() - t

        return call

    class Source:
        observe = staticmethod(timed("query", loop.source.observe))

    class Publisher:
        def __init__(self, inner: Any) -> None:
            self.publish = timed("publish", inner.publish)

    loop.source = Source()
    # Patched by name, so that any revision's loop and solver can be timed alike.
    setattr(loop_mod, "learn", timed("learn", getattr(loop_mod, "learn")))  # noqa: B009, B010
    inner_lp = getattr(solve_mod, "solve_lp")  # noqa: B009

    def solve_lp(form: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner_lp(form)
        finally:
            lps.append(time.perf_counter() - t)

    setattr(solve_mod, "solve_lp", solve_lp)  # noqa: B010
    out: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        publisher: Any = Publisher(RoutesFilePublisher(Path(tmp) / "routes.json"))
        loop.publishers.append(publisher)
        t = START.timestamp()
        if history_min > 0:
            mesh.run(store, t + SCRAPE_S, t + 60.0 * history_min, SCRAPE_S)
            t += 60.0 * history_min
        held: list[str | None] = []
        for _ in range(intervals):
            mesh.run(store, t + SCRAPE_S, t + INTERVAL_S, SCRAPE_S)
            t += INTERVAL_S
            for k in cpu:
                cpu[k] = 0.0
            lps.clear()
            c0 = time.process_time()
            rep = loop.step(datetime.fromtimestamp(t, UTC))
            step_cpu = time.process_time() - c0
            if rep.routes.routes:
                mesh.set_routing(rep.routes)
            bg = getattr(loop, "_background", None)
            if bg is not None:  # the worker's solve for the next interval: timed apart
                bg.future.result()
            tm = rep.timings
            held.append(rep.held_reason)
            out.append(
                {
                    "query": tm.query_s,
                    "learn": tm.learn_s,
                    "solve": tm.solve_s,
                    "publish": tm.publish_s,
                    "total": tm.total_s,
                    "query_cpu": cpu["query"],
                    "learn_cpu": cpu["learn"],
                    "publish_cpu": cpu["publish"],
                    "solve_cpu": max(step_cpu - sum(cpu.values()), 0.0),
                    "total_cpu": step_cpu,
                    "lp": sum(lps),
                    "lps": float(len(lps)),
                    "bg": getattr(loop, "last_background_s", None) or 0.0,
                }
            )
    import slate

    return {
        "name": name,
        "intervals": out,
        "held": held,
        "seconds": time.perf_counter() - started,
        "slate": str(Path(slate.__file__).parent),
    }


def _run(
    name: str,
    intervals: int,
    pythonpath: Path,
    timeout: float,
    solve_mode: str,
    history_min: float = 0.0,
) -> dict[str, Any] | None:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
    cmd += ["--intervals", str(intervals), "--history", str(history_min)]
    cmd += ["--solve-mode", solve_mode]
    try:
        done = subprocess.run(
            cmd, env=env, cwd=pythonpath, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        print(f"  {name} ({pythonpath}): timed out after {timeout:.0f}s", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"  {name} ({pythonpath}) failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _medians(res: dict[str, Any]) -> dict[str, float]:
    used = res["intervals"][1:] or res["intervals"]
    out = {k: statistics.median(r[k] for r in used) for k in used[0]}
    out["mean_total"] = statistics.mean(r["total"] for r in used)
    out["max_total"] = max(r["total"] for r in used)
    out["first_total"] = res["intervals"][0]["total"]
    return out


def _extract(rev: str, into: Path) -> str:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    data = subprocess.run(
        ["git", "archive", "--format=tar", rev, "slate", "examples"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return sha


def _line(label: str, m: dict[str, float]) -> str:
    wall = " ".join(f"{m[p]:7.3f}" for p in (*PHASES, "total"))
    cpu = " ".join(f"{m[p + '_cpu']:7.3f}" for p in (*PHASES, "total"))
    bg = f"  background solve {m['bg']:.3f}s" if m.get("bg") else ""
    first = f"  first interval {m['first_total']:.3f}s"
    return (
        f"  {label:10s} {wall}  | {cpu}  | {m['lp']:6.3f} {m['lps']:4.0f}"
        f"   {m['mean_total']:6.3f} {m['max_total']:6.3f}{bg}{first}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--intervals", type=int, default=3)
    ap.add_argument("--big", default="10x100", help="CLUSTERSxSERVICES of the generated app")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--quick", action="store_true", help="the public scenarios only")
    ap.add_argument("--baseline", metavar="REV", help="also time git revision REV, same run")
    ap.add_argument("--baseline-timeout", type=float, default=1800.0)
    ap.add_argument(
        "--solve-mode",
        choices=("inline", "background", "auto"),
        default="inline",
        help="this tree's ControlLoop.solve_mode (where the target LP is solved; `slate run` "
        "uses auto); the baseline runs as it is",
    )
    ap.add_argument(
        "--history",
        type=float,
        default=30.0,
        metavar="MIN",
        help="minutes of telemetry before the first measured interval (default 30, the whole "
        "lookback: a loop in steady state; 0: the simulator's 5 min warm-up only, as a loop "
        "just started)",
    )
    ap.add_argument("--worker", metavar="CASE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.intervals, args.solve_mode, args.history)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        base_root = Path(tmp)
        base_sha = _extract(args.baseline, base_root) if args.baseline else None
        load = os.getloadavg()
        print(
            f"median per interval over intervals 2..{args.intervals}, after {args.history:g} min "
            "of telemetry; "
            f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start"
            + (f"; baseline {args.baseline} = {base_sha}" if base_sha else "")
        )
        head = " ".join(f"{p:>7s}" for p in (*PHASES, "total"))
        print(f"  {'':10s} {head}  | {head}  | {'lp':>6s} {'LPs':>4s}   {'mean':>6s} {'max':>6s}")
        print(f"  {'':10s} {'wall seconds':^39s}  | {'CPU seconds':^39s}  |{'':14s}total wall")
        for name in _cases(args):
            print(name, flush=True)
            runs = [("this", ROOT)] + ([(base_sha or "base", base_root)] if base_sha else [])
            got: dict[str, dict[str, float]] = {}
            for label, path in runs:
                mode = args.solve_mode if label == "this" else "inline"
                res = _run(name, args.intervals, path, args.baseline_timeout, mode, args.history)
                if res is None:
                    print(f"  {label:10s} failed (see stderr)")
                    continue
                if Path(res["slate"]).resolve() != (path / "slate").resolve():
                    print(f"  {label}: ran {res['slate']}, not {path / 'slate'}", file=sys.stderr)
                    return 1
                got[label] = _medians(res)
                print(_line(label, got[label]), flush=True)
                holds = [f"{i + 1}: {h}" for i, h in enumerate(res.get("held", [])) if h]
                if holds:
                    print(f"  {'':10s} held intervals: {', '.join(holds)}", flush=True)
            if base_sha and "this" in got and base_sha in got:
                a, b = got["this"], got[base_sha]
                ratio = " ".join(
                    f"{a[p] / b[p]:7.2f}" if b[p] > 0 else f"{'-':>7s}" for p in (*PHASES, "total")
                )
                rcpu = " ".join(
                    f"{a[p + '_cpu'] / b[p + '_cpu']:7.2f}" if b[p + "_cpu"] > 0 else f"{'-':>7s}"
                    for p in (*PHASES, "total")
                )
                print(f"  {'x base':10s} {ratio}  | {rcpu}  |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
