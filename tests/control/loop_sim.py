"""A closed loop for the control tests: the simulated truth (slate/sim) and a ControlLoop that
sees only its telemetry; shared by test_loop.py and test_background_solve.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slate.control.publishers import CallbackPublisher
from slate.control.report import IntervalReport
from slate.model.routing import Routing
from slate.model.scenario import Scenario
from slate.sim.closed_loop import INTERVAL_S, SCRAPE_S, START, make_loop


class Sim:
    """The truth and a loop over it; `step()` runs one interval and applies what was published."""

    def __init__(self, scenario: Scenario, **kw: Any) -> None:
        self.mesh, self.store, self.loop = make_loop(scenario, **kw)
        self.t = START.timestamp()
        self.applied: list[Routing] = []
        self.loop.publishers.append(CallbackPublisher(self._apply))

    def _apply(self, report: IntervalReport) -> None:
        if report.publish_routes and report.routes.routes:
            self.applied.append(report.routes)

    def advance(self) -> None:
        self.mesh.run(self.store, self.t + SCRAPE_S, self.t + INTERVAL_S, SCRAPE_S)
        self.t += INTERVAL_S

    def step(self) -> IntervalReport:
        self.advance()
        report = self.loop.step(datetime.fromtimestamp(self.t, UTC))
        if report.publish_routes and report.routes.routes:
            self.mesh.set_routing(report.routes)
        return report
