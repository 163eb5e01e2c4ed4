"""How long `slate` takes to start, against Python's own start-up and scipy.optimize's import.

    .venv/bin/python bench/startup.py [--runs 9]

Each command runs as a whole process `--runs` times (after one warm-up run, so the page cache is
warm); the table shows the median, min and max wall time and the median's ratio to `python -c pass`
and to `python -c "import scipy.optimize"`, both measured in the same run. Goals (issue 9 item 4):
`slate --help` under ~0.2 s, `slate solve` on a public scenario under ~0.5 s. Nothing passes or
fails here: on a shared machine, read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SLATE = [PY, "-m", "slate.cli"]
BOUTIQUE = str(ROOT / "examples" / "scenarios" / "boutique-2r.yaml")
ALIBABA = str(ROOT / "examples" / "scenarios" / "alibaba-3r.yaml")

CASES: list[tuple[str, list[str]]] = [
    ("python -c pass", [PY, "-c", "pass"]),
    ("python -c 'import scipy.optimize'", [PY, "-c", "import scipy.optimize"]),
    ("slate --help", [*SLATE, "--help"]),
    ("slate solve --help", [*SLATE, "solve", "--help"]),
    ("slate xds serve --help", [*SLATE, "xds", "serve", "--help"]),
    ("slate solve boutique-2r", [*SLATE, "solve", BOUTIQUE]),
    ("slate solve alibaba-3r", [*SLATE, "solve", ALIBABA]),
]


def run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, cwd=ROOT)
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="runs per command (default 9)")
    args = ap.parse_args()
    times: dict[str, list[float]] = {}
    # Interleave the commands run by run, so a burst of load elsewhere hits them all alike.
    for _name, argv in CASES:
        run(argv)  # warm-up
    for _ in range(args.runs):
        for name, argv in CASES:
            times.setdefault(name, []).append(run(argv))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base, scipy_import = med[CASES[0][0]], med[CASES[1][0]]
    print(f"median of {args.runs} runs, seconds (machine shared: read the ratios)\n")
    print("| command | median | min | max | x python -c pass | x import scipy.optimize |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        print(
            f"| {name} | {med[name]:.3f} | {min(ts):.3f} | {max(ts):.3f} "
            f"| {med[name] / base:.2f} | {med[name] / scipy_import:.2f} |"
        )


if __name__ == "__main__":
    main()
