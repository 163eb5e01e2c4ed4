"""Start-up stays light: help and argument parsing import no scipy, grpc, pydantic or numpy.

The figures are in bench/startup.py; this guards the imports (a test never asserts speed).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("scipy", "numpy", "grpc", "google.protobuf", "pydantic", "kopf", "kubernetes")

PROBE = """
import json, sys
from slate.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] if not m.startswith("google.") else "google.protobuf"
                for m in sys.modules if m.split(".")[0] in %r or m.startswith("google.protobuf")})
print(json.dumps(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["solve", "--help"], ["simulate", "--help"], ["xds", "serve", "--help"], []],
    ids=lambda a: " ".join(a) or "no-args",
)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE % (tuple(m.split(".")[0] for m in HEAVY),), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # --help prints the usage; no arguments is a usage error: one line naming what is missing.
    assert "usage: slate" in proc.stdout or "slate: error: " in proc.stderr
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert loaded == [], f"`slate {' '.join(argv)}` imported {loaded}"


def test_the_probe_sees_heavy_imports() -> None:
    """The probe can fail: `slate solve FILE` does import numpy (and no longer scipy: the LP goes
    to highspy as numpy arrays)."""
    from pathlib import Path

    scenario = Path(__file__).resolve().parent.parent / "examples/scenarios/boutique-2r.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE % (("scipy", "numpy"),), "solve", str(scenario)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == ["numpy"]


SOLVE_PROBE = """
import json, sys
from slate.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in ("scipy", "highspy") if m in sys.modules)),
      file=sys.stderr)
"""


def test_solve_does_not_import_scipy() -> None:
    """`slate solve FILE` solves through highspy (slate/optimizer/highs.py) with numpy arrays:
    importing scipy.optimize alone would take most of the ~0.5 s start-up budget
    (bench/startup.py), scipy.sparse ~0.1 s more. The probe sees highspy, so it would see scipy."""
    from pathlib import Path

    scenario = Path(__file__).resolve().parent.parent / "examples/scenarios/boutique-2r.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", SOLVE_PROBE, "solve", str(scenario)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(proc.stdout)["routes"], proc.stderr[-500:]
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == ["highspy"]


def test_cli_policies_match_the_optimizer() -> None:
    from slate.cli import POLICIES
    from slate.optimizer.solve import POLICIES as SOLVER_POLICIES

    assert POLICIES == SOLVER_POLICIES
