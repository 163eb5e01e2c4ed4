"""Root test configuration: the shared fixtures, defined (and type-checked) where they live
(shared_fixtures.py, prometheus_harness.py).

mypy skips this file (pyproject.toml): two modules named `conftest` (here and tests/xds/) cannot be
checked in one run. Add shared fixtures to shared_fixtures.py and import them here.
"""

from prometheus_harness import prometheus_factory
from shared_fixtures import boutique, cli, public_scenarios, tiny_doc, tiny_scenario

__all__ = [
    "boutique",
    "cli",
    "prometheus_factory",
    "public_scenarios",
    "tiny_doc",
    "tiny_scenario",
]

from hypothesis import settings

# Tests check behaviour, not speed: no per-example deadline (on a loaded 2-core machine a 200 ms
# deadline fails examples at random). Each test still sets its own example count.
settings.register_profile("slate", deadline=None)
settings.load_profile("slate")
