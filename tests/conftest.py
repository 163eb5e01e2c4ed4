from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "examples" / "scenarios"


@pytest.fixture
def scenarios_dir() -> Path:
    return SCENARIOS
