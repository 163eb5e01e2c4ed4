"""The loop's published weights do not depend on the process's string-hash seed.

Python randomises the hash of strings per process, so the order of a set of cluster names
differs from run to run. The closed-loop simulator plays the weights in the order it is given
them (its random draws follow that order), so weights published in set order made the same
scenario and seed converge at interval 13 in one run and 16 in the next (hotel-3r mmc, seed 1);
the acceptance tests' figures then depended on the process they ran in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = (
    "import sys; from slate.cli import main; "
    "sys.exit(main(['simulate', sys.argv[1], '--closed-loop', '--intervals', '6', "
    "'--format', 'json']))"
)


def _run(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    path = str(ROOT / "examples/scenarios/hotel-3r.yaml")
    out = subprocess.run(
        [sys.executable, "-c", CODE, path],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return out.stdout


@pytest.mark.slow
def test_closed_loop_is_the_same_under_any_hash_seed() -> None:
    first = _run("0")
    assert first.strip()
    for seed in ("1", "2"):
        assert _run(seed) == first
