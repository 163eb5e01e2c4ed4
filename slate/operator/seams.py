"""What the operator needs of the control loop (BRIEF interface 3), as structural types.

The operator drives the Kubernetes-free `slate.control.ControlLoop` through these protocols so that
its handler logic is tested with a stand-in loop, and so that slate.control stays free to grow.
`LoopFactory` builds one loop per policy; `default_loop_factory` builds the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from slate.model.policy import TrafficPolicy
from slate.model.routing import Prediction, Routing


class ConditionLike(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


class ObservedLike(Protocol):
    @property
    def mean_latency_ms(self) -> float | None: ...
    @property
    def egress_usd_per_hour(self) -> float | None: ...


class IntervalReportLike(Protocol):
    @property
    def policy(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def conditions(self) -> Mapping[str, ConditionLike]: ...
    @property
    def routes(self) -> Routing: ...
    @property
    def target(self) -> Routing | None: ...
    @property
    def predicted(self) -> Prediction | None: ...
    @property
    def observed(self) -> ObservedLike | None: ...
    @property
    def solve_seconds(self) -> float: ...
    @property
    def exploring(self) -> bool: ...
    @property
    def held_reason(self) -> str | None: ...


class PublisherLike(Protocol):
    def publish(self, report: Any) -> None: ...


class LoopStateLike(Protocol):
    def to_json(self) -> str: ...


class ControlLoopLike(Protocol):
    @property
    def state(self) -> LoopStateLike: ...
    def step(self, at: datetime | None = None) -> IntervalReportLike: ...
    def update_policy(self, policy: TrafficPolicy) -> None: ...
    def close(self) -> None: ...


LoopFactory = Callable[[TrafficPolicy, Sequence[PublisherLike], str | None], ControlLoopLike]
"""(policy, publishers, saved state JSON from status or None) -> a loop."""


def default_loop_factory(prometheus_url: str | None) -> LoopFactory:
    """Real loops: slate.control's ControlLoop reading Prometheus (the policy's
    `telemetry.prometheusUrl`, else `prometheus_url`), resuming from the saved state."""

    def make(
        policy: TrafficPolicy, publishers: Sequence[PublisherLike], state_json: str | None
    ) -> ControlLoopLike:
        import importlib

        # Imported by name: slate.control sits above the model and is loaded only when a loop
        # is made (the operator's CLI stays fast to start, and tests swap in a stand-in).
        loop_mod: Any = importlib.import_module("slate.control.loop")
        state_mod: Any = importlib.import_module("slate.control.state")
        source = _prometheus_source(policy.prometheus_url or prometheus_url)
        state = None
        if state_json:
            try:
                state = state_mod.LoopState.from_json(state_json)
            except (ValueError, KeyError, TypeError):
                state = None  # an unreadable state: start from the weights in status instead
        # Slow target solves (over 0.5 s: a large mesh) move to a worker thread off the
        # interval, as in `slate run` (docs/control.md); the controller closes the loop.
        loop: ControlLoopLike = loop_mod.ControlLoop(
            policy,
            source,
            list(publishers),
            state,
            dry_run=policy.output == "dryRun",
            solve_mode="auto",
        )
        return loop

    return make


def _prometheus_source(url: str | None) -> Any:
    import importlib

    if not url:
        raise ValueError("no Prometheus URL: set spec.telemetry.prometheusUrl or --prometheus")
    backend: Any = importlib.import_module("slate.telemetry.prometheus")
    observe: Any = importlib.import_module("slate.telemetry.observe")
    return observe.Observer(backend.PrometheusBackend(url))
