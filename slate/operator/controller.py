"""The per-policy lifecycle, without Kopf: parse and check the spec, decide conflicts, run the
control loop every `rollout.interval`, write status, emit Events for transitions.

Kopf's handlers (handlers.py) only forward to a `Controller`: `observe(body)` on create, update and
resume, which (with `run_tasks`) starts the policy's task, `run()`: a timer whose period is the
policy's own interval, woken early when the spec changes; `forget(...)` on delete stops it. (Not a
Kopf daemon: Kopf puts a finalizer on every object with a daemon, and an `xds` or `dryRun` policy
has nothing outside itself to clean up, so it must not need a running operator to be deleted.)
Status goes through a `StatusSink` and Events through an `EventSink`, so the logic is tested with
fakes and runs the same under Kopf.

A policy is acted on only when its spec is valid (the webhook's rules, re-checked here: otherwise
`Ready=False, reason=InvalidSpec`, naming the field) and no older policy in its namespace routes one
of its services (`Ready=False, reason=Conflict`). An interval that raises is logged, counted and
reported (`Ready=False, reason=LoopError`); the next interval runs. A restarted operator resumes
each loop from the state saved in status (`status.state`), so proxies see no jump.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from slate.logs import kv
from slate.model.errors import InputError
from slate.model.policy import TrafficPolicy, cross_field_problems, policy_from_manifest
from slate.operator.conflicts import Claim, conflict_message, conflict_with
from slate.operator.kube import describe
from slate.operator.metrics import OperatorMetrics, set_finite
from slate.operator.seams import ControlLoopLike, IntervalReportLike, LoopFactory, PublisherLike
from slate.operator.status import (
    Cond,
    merge_conditions,
    merge_patch,
    not_acted_status,
    status_from_report,
    transitions,
)

log = logging.getLogger("slate.operator")


def until_slot(now: float, interval_s: float, key: str) -> float:
    """Seconds from `now` to the policy's next interval slot, at least half an interval away.

    Each policy's intervals fall on its own grid, `phase + n * interval` (wall clock), whose phase
    is a stable hash of `namespace/name`: policies created together (a `kubectl apply -f dir/`)
    spread over the interval instead of solving all at once every time, and every replica agrees
    on the grid. On the grid the period is the interval itself, however long a step took (the
    step's time is not added to it). The first interval runs at once; the second comes after 0.5 to
    1.5 intervals, then one interval apart.
    """
    phase = zlib.crc32(key.encode()) / 2**32 * interval_s
    since = (now - phase) % interval_s
    delay = interval_s - since
    return delay + interval_s if delay < interval_s / 2 else delay


RECHECK_S = 5.0
"""How often a policy that is not acted on (conflict, error) looks again."""
ERROR_BACKOFF_S = 10.0


class StatusSink(Protocol):
    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the policy's status subresource with `status` (None values delete)."""
        ...


class EventSink(Protocol):
    def event(self, ref: PolicyRef, type: str, reason: str, message: str) -> None: ...


class StopFlag(Protocol):
    """When a policy's task should end (an `AsyncStop`, or a test's stand-in)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class AsyncStop:
    """A StopFlag on an asyncio.Event; `wait(timeout)` returns early when set."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


PublishersFor = Callable[[TrafficPolicy, str | None], Sequence[PublisherLike]]
"""(policy, owner uid) -> the loop's publishers for the policy's `output`."""


@dataclass(frozen=True)
class PolicyRef:
    namespace: str
    name: str
    uid: str | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def body(self) -> dict[str, Any]:
        """The minimal object an Event names (`involvedObject`)."""
        meta: dict[str, Any] = {"namespace": self.namespace, "name": self.name}
        if self.uid:
            meta["uid"] = self.uid
        return {"apiVersion": "slate.dev/v1alpha1", "kind": "TrafficPolicy", "metadata": meta}


@dataclass
class PolicyRecord:
    ref: PolicyRef
    created: str
    generation: int | None
    policy: TrafficPolicy | None
    problem: InputError | None
    services: frozenset[str]
    status: dict[str, Any] = field(default_factory=dict)
    loop: ControlLoopLike | None = None
    loop_output: str | None = None
    loop_generation: int | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    not_acted: tuple[str, str] | None = None
    """(reason, message) last written for a policy that is not acted on."""
    task: asyncio.Task[None] | None = None
    stop: AsyncStop | None = None

    @property
    def claim(self) -> Claim:
        return Claim(self.ref.namespace, self.ref.name, self.created, self.services)


def _close(loop: ControlLoopLike | None) -> None:
    """A loop that will not run again lets go of its solver thread (a failure here is logged,
    the policy's lifecycle goes on)."""
    if loop is None:
        return
    try:
        loop.close()
    except Exception:
        log.exception("%s", kv("loop_close_failed"))


def _services_of(spec: Any) -> frozenset[str]:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("services"), list):
        return frozenset()
    return frozenset(
        s["name"]
        for s in spec["services"]
        if isinstance(s, Mapping) and isinstance(s.get("name"), str)
    )


def _check(body: Mapping[str, Any]) -> tuple[TrafficPolicy | None, InputError | None]:
    try:
        return policy_from_manifest(body), None
    except InputError as e:
        return None, e


class Controller:
    def __init__(
        self,
        loop_factory: LoopFactory,
        status: StatusSink,
        events: EventSink,
        publishers_for: PublishersFor,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        run_tasks: bool = False,
    ) -> None:
        self.loop_factory = loop_factory
        self.status_sink = status
        self.events = events
        self.publishers_for = publishers_for
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self.records: dict[str, PolicyRecord] = {}
        self.run_tasks = run_tasks
        """Start each policy's task from `observe` (the operator); tests drive `tick` instead."""

    # ---- what Kopf tells us -------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> PolicyRecord:
        """A policy was created, changed, or seen at start-up: record its spec and wake its loop."""
        meta = body.get("metadata") or {}
        ref = PolicyRef(
            str(meta.get("namespace") or "default"), str(meta.get("name")), meta.get("uid")
        )
        policy, problem = _check(body)
        rec = self.records.get(ref.key)
        status = dict(body.get("status") or {})
        if rec is None:
            rec = PolicyRecord(
                ref=ref,
                created=str(meta.get("creationTimestamp") or ""),
                generation=meta.get("generation"),
                policy=policy,
                problem=problem,
                services=_services_of(body.get("spec")),
                status=status,
            )
            self.records[ref.key] = rec
        else:
            rec.generation = meta.get("generation")
            rec.policy, rec.problem = policy, problem
            rec.services = _services_of(body.get("spec"))
            rec.status = status or rec.status
        self.metrics.policies.set(len(self.records))
        rec.wake.set()
        self._wake_blocked()
        if self.run_tasks and (rec.task is None or rec.task.done()):
            rec.stop = AsyncStop()
            rec.task = asyncio.get_running_loop().create_task(
                self.run(ref.namespace, ref.name, rec.stop), name=f"policy-{ref.key}"
            )
        return rec

    def forget(self, namespace: str, name: str) -> None:
        """The policy is gone: drop its loop and metrics; policies it blocked look again."""
        rec = self.records.pop(f"{namespace}/{name}", None)
        if rec is not None:
            _close(rec.loop)
            rec.wake.set()
            if rec.stop is not None:
                rec.stop.set()
        self.metrics.forget(namespace, name)
        self.metrics.policies.set(len(self.records))
        self._wake_blocked()

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every policy's task (the operator is exiting or lost the leadership); status and
        the state in it stay as they are, for the next leader to resume from."""
        tasks = []
        for rec in self.records.values():
            _close(rec.loop)
            if rec.stop is not None:
                rec.stop.set()
            if rec.task is not None:
                tasks.append(rec.task)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                t.cancel()
        self.records.clear()

    def _wake_blocked(self) -> None:
        """Policies not acted on look again (a conflict may be gone: any namespace)."""
        for r in self.records.values():
            if r.not_acted is not None:
                r.wake.set()

    # ---- the daemon ---------------------------------------------------------------------------

    async def run(self, namespace: str, name: str, stop: StopFlag) -> None:
        """Run the policy's intervals until `stop` is set (or the policy is forgotten)."""
        key = f"{namespace}/{name}"
        while not stop.is_set():
            rec = self.records.get(key)
            if rec is None:
                return
            rec.wake.clear()
            try:
                delay = await self.tick(rec)
                if rec.not_acted is None:  # acted: the next interval on the policy's own grid
                    delay = until_slot(time.time(), delay, key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never die silently: log, count, report, go on
                delay = ERROR_BACKOFF_S
                reason = type(e).__name__
                self.metrics.loop_errors.labels(namespace, name, reason).inc()
                why = describe(e)
                log.error("%s", kv("interval_failed", policy=key, error=why))
                log.debug("interval failure", exc_info=True)
                try:
                    await self._not_acted(rec, "LoopError", why, True)
                except Exception:
                    log.exception("%s", kv("status_write_failed", policy=key))
            await self._sleep(rec, delay, stop)

    async def _sleep(self, rec: PolicyRecord, seconds: float, stop: StopFlag) -> None:
        """Until `seconds` pass, the spec changes (wake), or the daemon is stopped."""
        if rec.wake.is_set():
            return
        waker = asyncio.ensure_future(rec.wake.wait())
        stopper = asyncio.ensure_future(stop.wait(seconds))
        try:
            await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waker, stopper):
                t.cancel()

    async def tick(self, rec: PolicyRecord) -> float:
        """One pass for one policy; returns the seconds until the next."""
        if rec.problem is not None or rec.policy is None:
            problem = rec.problem or InputError("", "cannot be read")
            self._drop_loop(rec)
            await self._not_acted(rec, "InvalidSpec", str(problem), True)
            return 3600.0  # woken by the next spec change
        conflict = conflict_with(rec.claim, (r.claim for r in self.records.values()))
        if conflict is not None:
            winner, service = conflict
            self._drop_loop(rec)
            message = conflict_message(winner, service, rec.ref.namespace)
            await self._not_acted(rec, "Conflict", message, False)
            return RECHECK_S
        policy = rec.policy
        loop = self._loop_for(rec, policy)
        started = time.perf_counter()
        report = await asyncio.to_thread(loop.step)
        elapsed = time.perf_counter() - started
        rec.not_acted = None
        await self._write_report(rec, report, loop)
        self._record_metrics(rec.ref, report, elapsed)
        return policy.interval_s

    # ---- internals ----------------------------------------------------------------------------

    def _loop_for(self, rec: PolicyRecord, policy: TrafficPolicy) -> ControlLoopLike:
        if rec.loop is not None and rec.loop_output != policy.output:
            # publishers depend on the output: rebuild, keeping what the loop learned
            self._drop_loop(rec)
        if rec.loop is None:
            saved = rec.status.get("state")
            rec.loop = self.loop_factory(
                policy,
                self.publishers_for(policy, rec.ref.uid),
                saved if isinstance(saved, str) else None,
            )
            rec.loop_output = policy.output
            rec.loop_generation = rec.generation
            log.info("%s", kv("loop_started", policy=rec.ref.key, resumed=bool(saved)))
        elif rec.loop_generation != rec.generation:
            rec.loop.update_policy(policy)
            rec.loop_generation = rec.generation
        return rec.loop

    def _drop_loop(self, rec: PolicyRecord) -> None:
        if rec.loop is not None:
            rec.status["state"] = rec.loop.state.to_json()
            _close(rec.loop)
            rec.loop = None

    async def _write(self, rec: PolicyRecord, new: dict[str, Any]) -> None:
        patch = merge_patch(rec.status, new)
        if not patch:
            return
        old_conditions = rec.status.get("conditions")
        try:
            await self.status_sink.patch_status(rec.ref.namespace, rec.ref.name, patch)
        except Exception:
            self.metrics.status_writes.labels("error").inc()
            raise
        self.metrics.status_writes.labels("ok").inc()
        merged = dict(rec.status)
        for k, v in patch.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        rec.status = merged
        for t in transitions(old_conditions, new.get("conditions") or []):
            self.events.event(rec.ref, t.type, t.reason, t.message)

    async def _not_acted(self, rec: PolicyRecord, reason: str, message: str, keep: bool) -> None:
        if rec.not_acted == (reason, message) and (
            rec.status.get("observedGeneration") == rec.generation
        ):
            return
        new = not_acted_status(
            rec.status, reason, message, rec.generation, self.clock(), keep_routes=keep
        )
        full = {k: v for k, v in rec.status.items()}
        full.update(new)
        full = {k: v for k, v in full.items() if v is not None}
        await self._write(rec, full)
        rec.not_acted = (reason, message)
        self.metrics.ready.labels(rec.ref.namespace, rec.ref.name).set(0)
        log.warning("%s", kv("not_acted_on", policy=rec.ref.key, reason=reason, message=message))

    async def _write_report(
        self, rec: PolicyRecord, report: IntervalReportLike, loop: ControlLoopLike
    ) -> None:
        new = status_from_report(report, rec.status, rec.generation, loop.state.to_json())
        await self._write(rec, {k: v for k, v in new.items() if v is not None})

    def _record_metrics(self, ref: PolicyRef, report: IntervalReportLike, elapsed: float) -> None:
        m = self.metrics
        ns, name = ref.namespace, ref.name
        m.intervals.labels(ns, name).inc()
        m.interval_seconds.labels(ns, name).observe(elapsed)
        solved = report.conditions.get("Solved")
        if solved is not None and solved.status == "True":
            m.solve_seconds.labels(ns, name).observe(report.solve_seconds)
        m.set_routes(ns, name, report.routes, target=False)
        m.set_routes(ns, name, report.target, target=True)
        if report.predicted is not None:
            set_finite(m.predicted_latency.labels(ns, name), report.predicted.mean_latency_ms, 1e-3)
            set_finite(m.predicted_egress.labels(ns, name), report.predicted.egress_usd_per_hour)
        if report.observed is not None:
            set_finite(m.observed_latency.labels(ns, name), report.observed.mean_latency_ms, 1e-3)
            set_finite(m.observed_egress.labels(ns, name), report.observed.egress_usd_per_hour)
        if report.exploring:
            m.exploration_steps.labels(ns, name).inc()
        if getattr(report, "rollout_restarted", False):
            m.rollout_restarts.labels(ns, name).inc()
        if report.held_reason and report.held_reason != "Solving":  # Solving: progress
            ready = report.conditions.get("Ready")
            m.loop_errors.labels(ns, name, ready.reason if ready else "Held").inc()
        ready = report.conditions.get("Ready")
        m.ready.labels(ns, name).set(1 if ready is not None and ready.status == "True" else 0)
        self._fit_metrics(ref, report)

    def _fit_metrics(self, ref: PolicyRef, report: IntervalReportLike) -> None:
        """Fit quality per station (`fit_r2`: {(service, cluster): R^2} of the curves fitted this
        interval). Labels are the policy's own services and clusters (the loop fits nothing
        else), so the series are bounded by the spec; a held interval fits nothing and leaves
        the last values."""
        fits = getattr(report, "fit_r2", None)
        if not isinstance(fits, Mapping) or not fits:
            return
        policy = self.records.get(ref.key)
        spec = policy.policy if policy is not None else None
        known: set[tuple[str, str]] | None = None
        if spec is not None:
            known = {(s.name, c.name) for s in spec.services for c in spec.clusters}
        self.metrics.clear_fits(ref.namespace, ref.name)
        for (service, cluster), r2 in fits.items():
            if known is not None and (service, cluster) not in known:
                continue
            set_finite(
                self.metrics.fit_quality.labels(ref.namespace, ref.name, service, cluster), r2
            )


def invalid_message(spec: Mapping[str, Any]) -> str | None:
    """The webhook's verdict: None if the cross-field rules hold, else the problems (paths)."""
    problems = cross_field_problems(spec)
    if not problems:
        return None
    shown = "; ".join(str(p) for p in problems[:5])
    more = len(problems) - 5
    return shown + (f" (and {more} more)" if more > 0 else "")


__all__ = [
    "Cond",
    "Controller",
    "EventSink",
    "PolicyRecord",
    "PolicyRef",
    "StatusSink",
    "StopFlag",
    "invalid_message",
    "merge_conditions",
]
