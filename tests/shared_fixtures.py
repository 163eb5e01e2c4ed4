"""Fixtures shared by the whole suite, registered by tests/conftest.py (keep this small;
package-specific fixtures live beside their tests).

- `public_scenarios`: the paths of examples/scenarios/*.yaml (the public fixtures).
- `tiny_doc`: a fresh copy of the hand-sized scenario document of tiny_scenario.py (objective
  `max_utilization: 0.8`), to edit in a test; `tiny_scenario`: it parsed.
- `cli`: runs `slate` in-process, returning (exit code, stdout, stderr).
- `boutique`: examples/scenarios/boutique-2r.yaml parsed (the control-loop tests' mesh).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_scenario import tiny

from slate.model.scenario import Scenario
from slate.model.scenario_file import load_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="session")
def public_scenarios() -> list[Path]:
    return sorted((EXAMPLES / "scenarios").glob("*.yaml"))


@pytest.fixture
def tiny_doc() -> dict[str, Any]:
    return tiny({"max_utilization": 0.8})


@pytest.fixture
def tiny_scenario(tiny_doc: dict[str, Any]) -> Scenario:
    from slate.model.scenario_file import scenario_from_dict

    return scenario_from_dict(tiny_doc)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    from slate.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def boutique() -> Scenario:
    return load_scenario(EXAMPLES / "scenarios" / "boutique-2r.yaml")
