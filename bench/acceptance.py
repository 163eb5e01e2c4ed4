"""The closed-loop acceptance figures (issue 6 item 5) over many simulator seeds.

    .venv/bin/python bench/acceptance.py [--seeds 1-6] [--jobs 2] [--baseline REV]

Every public scenario and generated apps 0 and 1 (3 clusters x 8 services), truth mmc and
distorted, `--max-shift 0.1`, from local routing, 25 intervals: per case the first interval from
which the objective stays within 5% of the truth's optimum, the final gap, the most reversals of
one weight after that interval, and whether every criterion of tests/sim/test_closed_loop.py
holds (<= 15, <= 2 reversals, no move over the max shift). A Markdown table per case and the
count per seed.

Why many seeds: the trajectory of one case is chaotic. Handing the simulator the same weights in
another dict order (which reorders its random draws, nothing else) moved the count of seeds 1-3
from 24 to 26 of 30 and one case from "within 5% from interval 20" to "from 6". A change of one
or two cases out of 30 is noise; compare counts over 60 runs or more, and against `--baseline
REV` (that revision's `slate` package extracted with `git archive` and run with this venv on the
same cases, in the same run).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = ("alibaba-3r", "boutique-2r", "hotel-3r", "seed0", "seed1")
TRUTHS = ("mmc", "distorted")

ONE = r"""
import itertools, json, sys
from collections import defaultdict
from pathlib import Path
from slate.model.scenario_file import load_scenario
from slate.sim.closed_loop import run_closed_loop
from slate.sim.synthetic import SyntheticSpec, synthetic_scenario

name, truth, seed, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
if name.startswith("seed"):
    sc = synthetic_scenario(SyntheticSpec(clusters=3, services=8, seed=int(name[4:])))
else:
    sc = load_scenario(root / "examples" / "scenarios" / f"{name}.yaml")
res = run_closed_loop(sc, intervals=25, truth=truth, max_shift=0.1, seed=seed)
gaps = [r.gap for r in res.rows]
at = next(
    (i for i in range(len(gaps)) if all(g is not None and g <= 0.05 for g in gaps[i:])), None
)
rev = None
if at is not None:
    series = defaultdict(list)
    for row in res.rows[at:]:
        for r in row.routes.routes:
            for c, w in r.normalized().items():
                series[(*r.key, c)].append(w)
    rev = 0
    for values in series.values():
        signs = [1 if b > a else -1 for a, b in itertools.pairwise(values) if abs(b - a) > 1e-6]
        rev = max(rev, sum(1 for a, b in itertools.pairwise(signs) if a != b))
shift_ok = all(r.max_weight_shift <= 0.1 + 1e-6 for r in res.rows)
print(json.dumps({"at": at, "final": gaps[-1], "rev": rev,
                  "ok": at is not None and at <= 15 and rev <= 2 and shift_ok}))
"""


def run_case(code_root: Path, name: str, truth: str, seed: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    out = subprocess.run(
        [sys.executable, "-c", ONE, name, truth, str(seed), str(ROOT)],
        env=env,
        cwd=code_root,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        err = out.stderr.strip().splitlines()
        return {"at": None, "final": None, "rev": None, "ok": False, "error": err[-1:]}
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def extract(rev: str, into: Path) -> Path:
    data = subprocess.run(
        ["git", "archive", rev, "slate"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def fmt(r: dict[str, Any]) -> str:
    final = "-" if r["final"] is None else f"{100 * r['final']:.2f}%"
    at = "never" if r["at"] is None else str(r["at"])
    return f"{at} / {final} / {'-' if r['rev'] is None else r['rev']} {'ok' if r['ok'] else 'MISS'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-3", help="simulator seeds: 1-6 or 1,4,7")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--baseline", default=None, help="also run git revision REV's slate")
    args = ap.parse_args()
    seeds = seeds_of(args.seeds)
    roots = {"now": ROOT}
    tmp = tempfile.TemporaryDirectory()
    if args.baseline:
        roots["base"] = extract(args.baseline, Path(tmp.name))
    jobs = [
        (label, root, name, truth, seed)
        for seed, name, truth in itertools.product(seeds, CASES, TRUTHS)
        for label, root in roots.items()
    ]
    results: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {
            (label, name, truth, seed): pool.submit(run_case, root, name, truth, seed)
            for label, root, name, truth, seed in jobs
        }
        for key, fut in futs.items():
            results[key] = fut.result()
            print(f"{key}: {fmt(results[key])}", file=sys.stderr)
    labels = list(roots)
    print(
        "| seed | case | truth | " + " | ".join(f"{x}: from / final / rev" for x in labels) + " |"
    )
    print("|---|---|---|" + "---|" * len(labels))
    count: dict[tuple[str, int], int] = defaultdict(int)
    for seed, name, truth in itertools.product(seeds, CASES, TRUTHS):
        cells = []
        for label in labels:
            r = results[(label, name, truth, seed)]
            count[(label, seed)] += bool(r["ok"])
            cells.append(fmt(r))
        print(f"| {seed} | {name} | {truth} | " + " | ".join(cells) + " |")
    print()
    for label in labels:
        per = ", ".join(f"seed {s}: {count[(label, s)]}/10" for s in seeds)
        total = sum(count[(label, s)] for s in seeds)
        print(f"{label}: {total}/{10 * len(seeds)} ({per})")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
