"""How long `slate` takes to start, against Python's own start-up and scipy.optimize's import.

    .venv/bin/python bench/startup.py [--runs 9] [--baseline REV]

Each command runs as a whole process `--runs` times (after one warm-up run, so the page cache is
warm); the table shows the median, min and max wall time and the median's ratio to `python -c pass`
and to `python -c "import scipy.optimize"`, both measured in the same run. Goals (issue 9 item 4):
`slate --help` under ~0.2 s, `slate solve` on a public scenario under ~0.5 s. Nothing passes or
fails here: on a shared machine, read the ratios. `--baseline REV` also runs `slate solve` of git
revision REV (its `slate` package extracted with `git archive`, run from that directory with this
venv), interleaved with the rest, so the speed-up against it is measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
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


def run(argv: list[str], cwd: Path = ROOT) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, cwd=cwd)
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="runs per command (default 9)")
    ap.add_argument("--baseline", metavar="REV", help="also time git revision REV's slate solve")
    args = ap.parse_args()
    cases = [(name, argv, ROOT) for name, argv in CASES]
    tmp = tempfile.TemporaryDirectory(prefix="slate-startup-")
    if args.baseline:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", args.baseline, "slate"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp.name, filter="data")
        for name, argv in CASES:
            if name.startswith("slate solve ") and "--help" not in argv:
                cases.append((f"{name} @ {args.baseline}", argv, Path(tmp.name)))
    times: dict[str, list[float]] = {}
    # Interleave the commands run by run, so a burst of load elsewhere hits them all alike.
    for _name, argv, cwd in cases:
        run(argv, cwd)  # warm-up
    for _ in range(args.runs):
        for name, argv, cwd in cases:
            times.setdefault(name, []).append(run(argv, cwd))
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
    for name, _argv, _cwd in cases:
        if args.baseline and name.endswith(f" @ {args.baseline}"):
            now = name.removesuffix(f" @ {args.baseline}")
            print(f"\n{now}: {med[now] / med[name]:.2f}x the time of {args.baseline}", end="")
    print()
    tmp.cleanup()


if __name__ == "__main__":
    main()
