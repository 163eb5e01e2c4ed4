"""The control loop (BRIEF interface 3): every interval observe -> learn -> solve -> safety ->
publish, and say what it did in an IntervalReport.

Safety rules, all here:
- the optimizer only sees each station's fitted curve up to what was measured plus a bounded step
  (`work_bounds`): it never bets on an extrapolation it has not measured. That step is the
  exploration: a small move past the measured range produces the missing samples; when the next
  interval's measured latency is worse by more than ROLLBACK_TOLERANCE, the move is rolled back and
  the range is not stepped past for COOLDOWN intervals;
- weights move at most maxShiftPerInterval per interval towards the target (safety.project), keep
  minLocalShare, and do not move at all inside a small deadband (no jitter from noisy fits);
- the rollout never stalls for good: when it has not moved for STALL_INTERVALS intervals while the
  learned model puts the target more than MAX_BAND better, its damping memory (each weight's last
  direction and each key's step limit) starts afresh;
- a Prometheus outage, stale or empty telemetry, an infeasible or failed solve, or a target solve
  still running in the worker (solve_mode "auto") keep the weights in force (never zero a
  locality silently) and say why (`held_reason`, the conditions);
- `run()` never dies silently: every exception of an interval is logged, counted and the next
  interval runs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from slate.control.learned import Learned, LearnedModel, external, internal, learn
from slate.control.publishers import Publisher
from slate.control.report import Condition, IntervalReport, Observed, Timings
from slate.control.safety import DEADBAND, Problem, limit_move, max_shift, project_many, settle
from slate.control.state import LoopState
from slate.evaluate import Evaluation, evaluate
from slate.learn.curves import FittedStation
from slate.logs import kv
from slate.model.keys import RouteKey, nearest_split
from slate.model.policy import TrafficPolicy
from slate.model.routing import INGRESS, Prediction, Route, Routing
from slate.optimizer.bounds import WeightBound
from slate.optimizer.errors import InfeasibleError, SolveError
from slate.optimizer.solve import PolicyResult, solve
from slate.telemetry.observation import Observation, TelemetrySource, TelemetryUnavailable

log = logging.getLogger(__name__)

ROLLBACK_TOLERANCE = 0.25
"""An exploring move is rolled back when the measured mean latency rises by more than this
fraction over the interval before it."""
COOLDOWN = 3
"""Intervals without stepping past the measured range after a rollback."""
STALE_INTERVALS = 3.0
"""Telemetry is stale when its newest sample is older than this many intervals (and the window)."""
GB_PER_KB = 1e-6
TRUST_STEP = 2.0
"""How far past its measured range a station's load may be planned: this many times
maxShiftPerInterval of its service's total work (the rollout moves at most maxShiftPerInterval of
each route per interval, so the plan is never more than a couple of intervals ahead of the data)."""
IMPROVEMENT_DEADBAND = 0.004
"""The weights in force stay when the learned model puts them this close to the target."""
MIN_BAND = 0.01
MAX_BAND = 0.03
"""Bounds of the learned objective's uncertainty (ControlLoop._band): a predicted gain below it
does not turn a weight around, nor move weights that rested last interval."""
PROBE_SHARE = 0.05
"""Share of one route key's calls sent over a cluster pair of unmeasured RTT to measure it."""
PROBE_RETRY = 10
"""Intervals before a pair probed once may be probed again (if it is still unmeasured)."""
SHRINK = 0.5
GROW = 2.0
"""Per-key step-size adaptation (Rprop's eta-minus / eta-plus): see ControlLoop._roll_out."""
STEP_LENGTHS = (1.0, 0.5, 0.25)
"""Fractions of the projected move tried each interval; the learned model picks the best."""
STALL_INTERVALS = 3
"""Intervals without a move, with the target more than MAX_BAND better by the learned model, after
which the rollout's damping memory is cleared (ControlLoop._restart_rollout). The damping halves a
key's step each time its move would turn a weight back; a key whose step fell below the deadband
that way never moves again, and a target that needs it is never reached (measured: hotel-3r
distorted, simulator seed 3, held 10.3% from the optimum from interval 12 on)."""

SolveMode = Literal["inline", "background", "auto"]
"""Where the target LP is solved (ControlLoop._target_result): in the interval ("inline"), in a
worker thread from the previous interval's fits ("background"), or "auto": inline while target
solves are fast, in the worker once one takes longer than BACKGROUND_AFTER_S."""
BACKGROUND_AFTER_S = 0.5
"""solve_mode "auto": a target solve slower than this (wall seconds, inline or in the worker)
moves the next ones to the worker; one faster than half of it brings them back inline. Half of the
1 s interval aimed for at 10 clusters x 100 services (bench/loop.py): below it, an inline answer
costs the interval little and is one interval fresher (measured: the lag costs acceptance runs,
docs/control.md); above it, query + learn + solve no longer fit that second."""
SOLVE_WAIT_S = 0.5
"""solve_mode "auto", while its target solves are fast: the interval hands its solve to the worker
and waits for it this long (wall seconds). A solve still running then (the first interval of a
large mesh, before any solve was timed; a mesh that grew) is left to finish in the worker: the
interval keeps the weights in force (held, reason Solving) and the next one takes that answer. So
no interval waits much longer than this for its target (BACKGROUND_AFTER_S's reasoning)."""


@dataclass(frozen=True)
class _Held(Exception):
    reason: str
    message: str
    telemetry: Condition | None = None
    solved: Condition | None = None


class ControlLoop:
    """`ControlLoop(policy, source, publishers, state=None)`; `step()` runs one interval."""

    def __init__(
        self,
        policy: TrafficPolicy,
        source: TelemetrySource,
        publishers: Sequence[Publisher] = (),
        state: LoopState | None = None,
        *,
        deployment: Mapping[str, Sequence[str]] | None = None,
        dry_run: bool = False,
        lookback_s: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        solve_mode: SolveMode = "inline",
    ) -> None:
        self.policy = policy
        self.source = source
        self.publishers = list(publishers)
        self.state = state or LoopState()
        self.deployment = {k: tuple(v) for k, v in (deployment or {}).items()}
        self.dry_run = dry_run
        self.lookback_s = lookback_s
        self.on_error = on_error
        self.errors_total = 0
        self.publish_errors_total = 0
        self.intervals_total = 0
        self.held_total = 0
        self.last_report: IntervalReport | None = None
        self.last_learned: Learned | None = None
        self._lock = threading.Lock()
        self._pending_limits: dict[tuple[str, str, str], float] = {}
        self._pending_stalled = False
        self._evaluations: dict[
            tuple[int, int, frozenset[int]], tuple[tuple[object, ...], Evaluation | None]
        ] = {}
        self.solve_mode: SolveMode = solve_mode
        self.background_errors_total = 0
        self.last_background_s: float | None = None
        """Wall seconds of the last background solve that finished."""
        self.last_solve_s: float | None = None
        """Wall seconds of the last target solve that finished, inline or in the worker."""
        self._backgrounded = False  # solve_mode "auto": where the target is solved now
        self._from_background = False  # this interval's target came from the worker
        self._background: _Background | None = None
        self._fresh: PolicyResult | None = None  # solved this interval from this interval's fits
        self._to_solve: tuple[Learned, bool, TrafficPolicy, int] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def update_policy(self, policy: TrafficPolicy) -> None:
        with self._lock:
            self.policy = policy

    # ------------------------------------------------------------------------------------------
    def step(self, at: datetime | None = None) -> IntervalReport:
        """One interval, in phases: observe (`_observe`), learn (`_learn`), decide the target and
        the next weights (`_decide`), report and publish (`_report_and_publish`), and remember
        what the next interval needs (`_remember`). A phase that cannot go on raises `_Held` (or
        the optimizer's errors): the weights in force stay and the report says why."""
        with self._lock:
            policy = self.policy
        st = self.state
        self._evaluations.clear()
        self._pending_stalled = False  # set by _roll_out when it gets as far as stepping
        self._fresh = None
        self._to_solve = None
        self._from_background = False
        iv = _Interval(policy, at or datetime.now(UTC), before=st.weights, new_weights=st.weights)
        try:
            self._observe(iv)
            self._learn(iv)
            self._decide(iv)
        except _Held as h:
            iv.held = h
            iv.telemetry_ok = h.telemetry or iv.telemetry_ok
            iv.solved = h.solved or iv.solved
        except InfeasibleError as e:
            iv.held = _Held("Infeasible", _short(e))
            iv.solved = Condition("False", "Infeasible", _short(e))
        except SolveError as e:
            iv.held = _Held("SolverFailed", _short(e))
            iv.solved = Condition("False", "SolverFailed", _short(e))
        return self._report_and_publish(iv)

    def _observe(self, iv: _Interval) -> None:
        """Query the telemetry; hold when it is unreachable, empty or stale. A loop's first
        interval takes the routing the mesh uses now as the weights in force."""
        policy, st = iv.policy, self.state
        t0 = time.perf_counter()
        try:
            obs = self.source.observe(policy, iv.now)
        except TelemetryUnavailable as e:
            raise _Held(
                "PrometheusUnavailable",
                f"telemetry backend unreachable: {_short(e)}",
                telemetry=Condition("False", "PrometheusUnavailable", _short(e)),
                solved=Condition("False", "NotRun", "no telemetry"),
            ) from None
        finally:
            iv.query_s = time.perf_counter() - t0
        iv.problems = obs.problems
        stale = obs.staleness_s
        limit = max(STALE_INTERVALS * policy.interval_s, policy.window_s)
        if not obs.has_data or stale is None:
            raise _Held(
                "NoData",
                "no traffic of the policy's services in the telemetry",
                telemetry=Condition("False", "NoData", "no samples for the policy's services"),
                solved=Condition("False", "NotRun", "no telemetry"),
            )
        if stale > limit:
            msg = f"newest sample is {stale:.0f}s old (limit {limit:.0f}s)"
            raise _Held(
                "Stale",
                msg,
                telemetry=Condition("False", "Stale", msg),
                solved=Condition("False", "NotRun", "stale telemetry"),
            )
        iv.observed = observed_figures(policy, obs)
        if not st.weights.routes:
            # A hold later in this interval still publishes no routes (new_weights stays empty):
            # the mesh keeps its own balancing until the loop decides something.
            st.weights = _observed_routing(obs)
            iv.before = st.weights
        iv.obs = obs

    def _learn(self, iv: _Interval) -> None:
        """Learn the call graph, service times and station curves; keep the new fits (the last
        ones stay in iv.prev_curves for the fits' uncertainty). Learning that fails holds."""
        st = self.state
        assert iv.obs is not None
        t1 = time.perf_counter()
        try:
            learned = learn(iv.policy, iv.obs, self.deployment, st.curves, st.service_ms)
        except Exception as e:  # learning on bad data must not kill the loop
            log.warning("%s", kv("learn_failed", policy=_name(iv.policy), error=_short(e)))
            raise _Held(
                "SolverFailed",
                f"learning failed: {_short(e)}",
                solved=Condition("False", "SolverFailed", f"learning failed: {_short(e)}"),
            ) from None
        finally:
            iv.learn_s = time.perf_counter() - t1
        self.last_learned = iv.learned = learned
        iv.prev_curves = st.curves
        st.curves = {k: v for k, v in learned.latency.curves.items() if v.samples > 0}
        st.service_ms = dict(learned.service_ms)

    def _decide(self, iv: _Interval) -> None:
        """The next weights: back to where an exploring move started when it made things worse;
        otherwise the target (solved where solve_mode says, kept by the hysteresis), the rollout
        towards it, a probe of an unmeasured cluster pair, and the max-shift limit."""
        policy, st, learned = iv.policy, self.state, iv.learned
        assert learned is not None
        rolled_back = self._maybe_roll_back(iv.observed)
        if rolled_back is not None:
            iv.new_weights = rolled_back
            iv.held = _Held("ExplorationRolledBack", "measured latency rose after exploring")
            iv.solved = Condition("True", "Optimal", "exploration rolled back")
            return
        t2 = time.perf_counter()
        try:
            result = self._target_result(learned, st.cooldown > 0, policy)
        finally:
            iv.solve_s = time.perf_counter() - t2
        t2 = time.perf_counter()  # the rollout's own solves count as solving too
        target = _external_routing(result.routing)
        self._remember_solved(learned, result, target)
        routings = [st.weights, target, st.target or Routing(())]
        prev_curves = iv.prev_curves
        band = _Lazy(lambda: self._band(learned, prev_curves, routings))
        target = self._sticky_target(learned, target, band)
        iv.target = st.target = target
        iv.exploring = _exploring(learned, result)
        iv.solved = (
            Condition("True", "OverCapacity", _shortfall_text(result))
            if result.shortfalls
            else Condition(
                "True",
                "Optimal",
                f"solved in {result.stats.seconds:.3f}s" if result.stats else "solved",
            )
        )
        target_j = self._objective(learned, target)
        if st.stalled >= STALL_INTERVALS:
            self._restart_rollout(policy)
            iv.restarted = True
        iv.new_weights = self._roll_out(learned, target, target_j, st.weights, policy, band)
        if st.cooldown == 0 and learned.unmeasured_rtt:
            probe = self._probe_unmeasured(learned, target_j, iv.new_weights, band)
            if probe is not None:
                iv.new_weights, iv.probed = probe
                iv.exploring = True
        iv.new_weights = _limit_moves(st.weights, iv.new_weights, policy.max_shift_per_interval)
        iv.solve_s += time.perf_counter() - t2

    def _applied(self, iv: _Interval, shift: float, paused: bool) -> Condition:
        """The Applied condition: held, paused, dry run, converged, or rolling out."""
        held = iv.held
        if held is not None and held.reason == "Solving":  # progress, not a failure
            return Condition("False", "Solving", "the weights in force stay: " + held.message)
        if held is not None and held.reason != "ExplorationRolledBack":
            return Condition("False", "Held", f"kept the last good weights: {held.message}")
        if paused:
            return Condition("False", "Paused", "spec.paused: nothing published")
        if self.dry_run:
            return Condition("False", "DryRun", "dry run: nothing published")
        target, new_weights = iv.target, iv.new_weights
        if target is not None and all(
            settle(r.normalized(), (new_weights.get(*r.key) or r).normalized())
            for r in target.routes
        ):
            return Condition("True", "Converged", "the weights in force are the target")
        note = (
            f" (rollout restarted after {STALL_INTERVALS} intervals without a move)"
            if iv.restarted
            else ""
        )
        return Condition("True", "RollingOut", f"moved at most {shift:.3f} this interval{note}")

    def _report_and_publish(self, iv: _Interval) -> IntervalReport:
        """Report the interval to every publisher (a publisher that raises is logged and counted,
        and the weights in force stay what the proxies may still have), hand the fits to the
        background solver, remember, and log one line."""
        st = self.state
        policy, held = iv.policy, iv.held
        shift = _routing_shift(iv.before, iv.new_weights)
        paused = policy.paused
        publish_routes = not (paused or self.dry_run)
        if paused:
            iv.new_weights = st.weights  # keep what is in force; compute and report only
            shift = 0.0
        predicted = self._predict(iv.learned, iv.new_weights)
        applied = self._applied(iv, shift, paused)
        report = IntervalReport(
            policy=_name(policy),
            at=iv.now,
            conditions={},
            routes=iv.new_weights,
            target=iv.target,
            predicted=predicted,
            observed=iv.observed,
            solve_seconds=iv.solve_s,
            exploring=iv.exploring,
            held_reason=None if held is None else held.reason,
            interval=st.interval,
            max_weight_shift=shift,
            publish_routes=publish_routes,
            generation=policy.generation,
            timings=Timings(iv.query_s, iv.learn_s, iv.solve_s, 0.0),
            problems=iv.problems,
            fit_r2=_fit_r2(iv.learned),
            rollout_restarted=iv.restarted,
            target_from_background=self._from_background,
        )
        t3 = time.perf_counter()
        publish_error: str | None = None
        for pub in self.publishers:
            try:
                pub.publish(_with_conditions(report, iv.telemetry_ok, iv.solved, applied, paused))
            except Exception as e:
                self.publish_errors_total += 1
                publish_error = _short(e)
                log.error("%s", kv("publish_failed", publisher=type(pub).__name__, error=_short(e)))
        if publish_error is not None and publish_routes:
            applied = Condition("False", "PublishFailed", publish_error)
            iv.new_weights = iv.before  # what the proxies may still have
        p_s = time.perf_counter() - t3
        self._start_background()
        moved = self._remember(iv, shift, paused, publish_error)
        final = _with_conditions(
            replace(
                report,
                routes=iv.new_weights if (moved or self.dry_run) else st.weights,
                max_weight_shift=shift if moved else 0.0,
                timings=Timings(iv.query_s, iv.learn_s, iv.solve_s, p_s),
            ),
            iv.telemetry_ok,
            iv.solved,
            applied,
            paused,
        )
        self.last_report = final
        log.info(
            "%s",
            kv(
                "interval",
                policy=final.policy,
                n=final.interval,
                held=final.held_reason,
                shift=round(shift, 4),
                exploring=iv.exploring,
                background=self._from_background,
                seconds=round(final.timings.total_s, 3),
            ),
        )
        return final

    def _remember(
        self, iv: _Interval, shift: float, paused: bool, publish_error: str | None
    ) -> bool:
        """Book-keeping for the next interval; whether the new weights are now in force."""
        st, held = self.state, iv.held
        new_weights = iv.new_weights
        was_rolled_back = held is not None and held.reason == "ExplorationRolledBack"
        moved = (
            not paused
            and not self.dry_run
            and (held is None or was_rolled_back)
            and publish_error is None
        )
        if moved and iv.probed is not None:
            st.probed[iv.probed] = st.interval
        if moved:
            # An exploring move is an experiment: remember what it replaced, so the next
            # interval can roll it back when the measured latency says it was a mistake.
            if iv.exploring and new_weights != st.weights:
                st.before_exploring = st.weights
            elif not iv.exploring:
                st.before_exploring = None
            _remember_directions(st.directions, st.weights, new_weights)
            for k, lim in self._pending_limits.items():
                a, b = st.weights.get(*k), new_weights.get(*k)
                if a is None or b is None or max_shift(a.normalized(), b.normalized()) > 1e-6:
                    st.step_limits[k] = lim
            st.stalled = st.stalled + 1 if self._pending_stalled else 0
            st.still = st.still + 1 if shift < 1e-9 else 0
            st.weights = new_weights
        if was_rolled_back:
            st.cooldown = COOLDOWN
            st.before_exploring = None
        elif st.cooldown > 0:
            st.cooldown -= 1
        if iv.observed is not None and iv.observed.mean_latency_ms is not None:
            st.last_observed_ms = iv.observed.mean_latency_ms
        st.interval += 1
        self.intervals_total += 1
        if held is not None:
            self.held_total += 1
        return moved

    # ------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, interval_s: float | None = None) -> None:
        """Run intervals until `stop` is set. Never dies: an exception of an interval is logged,
        counted (errors_total) and the next interval runs."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception as e:
                self.errors_total += 1
                log.exception("%s", kv("interval_failed", policy=_name(self.policy)))
                if self.on_error is not None:
                    try:
                        self.on_error(e)
                    except Exception:
                        log.exception("%s", kv("on_error_failed"))
            wait = (interval_s or self.policy.interval_s) - (time.monotonic() - started)
            stop.wait(max(wait, 0.0))

    # ------------------------------------------------------------------------------------------
    def _target_result(
        self, learned: Learned, cautious: bool, policy: TrafficPolicy
    ) -> PolicyResult:
        """This interval's optimizer answer (`_solve`), solved where `solve_mode` says
        (`_in_background`). In the background, the target LP is solved off the interval's
        critical path: the answer used now is the one solved from the previous interval's fits
        (in a worker thread, started once that interval had published), and this interval's fits
        go to the worker for the next one. The rollout, the hysteresis and the prediction still
        judge it by this interval's fits. A background answer is used only by the very next
        interval, with the same policy object and the same caution (a rollback's cooldown
        discards it); otherwise, and when the background solve failed (logged and counted when
        it fails, _background_done), this interval solves inline and its answer also serves the
        next interval (what the worker would have given)."""
        interval = self.state.interval
        if not self._in_background():
            stale, self._background = self._background, None
            if stale is not None:
                stale.future.cancel()  # back from the worker: an answer from older fits
            if self.solve_mode == "auto":  # the next interval may move to the worker: keep it
                result = self._fresh = self._solve_waiting(learned, cautious, policy, interval)
                self._keep_for_next(result, cautious, policy, interval)
                return result
            result = self._fresh = self._solve_inline(learned, cautious)
            return result
        ready = self._take_background(cautious, policy, interval)
        if ready is None:
            result = self._fresh = self._solve_inline(learned, cautious)
            self._keep_for_next(result, cautious, policy, interval)
            return result
        self._to_solve = (learned, cautious, policy, interval)  # once this interval is out
        self._from_background = True
        return ready

    def _in_background(self) -> bool:
        """Whether this interval takes its target from the worker (solve_mode; "auto" by the last
        target solve's wall time, with hysteresis: BACKGROUND_AFTER_S)."""
        if self.solve_mode != "auto":
            return self.solve_mode == "background"
        last = self.last_solve_s
        was = self._backgrounded
        if last is not None and last > BACKGROUND_AFTER_S:
            self._backgrounded = True
        elif last is not None and last < BACKGROUND_AFTER_S / 2:
            self._backgrounded = False
        if self._backgrounded != was and last is not None:
            log.info(
                "%s",
                kv(
                    "target_solve_moved",
                    policy=_name(self.policy),
                    to="worker" if self._backgrounded else "interval",
                    last_solve_s=round(last, 3),
                ),
            )
        return self._backgrounded

    def _solve_waiting(
        self, learned: Learned, cautious: bool, policy: TrafficPolicy, interval: int
    ) -> PolicyResult:
        """solve_mode "auto" while solves are fast: this interval's target solve runs in the
        worker and the interval waits for it at most SOLVE_WAIT_S. Past that the solve is left
        running as the next interval's background answer, later solves go to the worker
        (`_in_background`), and this interval is held: the weights in force stay."""
        executor = self._worker()
        started = time.perf_counter()
        try:
            if executor is None:
                raise RuntimeError("closed")
            future = executor.submit(self._solve, learned, cautious)
        except RuntimeError:  # closed (close() may run while this interval does): solve here
            return self._solve_inline(learned, cautious)
        try:
            result = future.result(timeout=SOLVE_WAIT_S)
        except FutureTimeout:
            bg = _Background(future, cautious, policy, interval, started)
            future.add_done_callback(lambda f: self._background_done(bg, f))
            self._background = bg
            self.last_solve_s = None  # unknown until it ends (_background_done)
            if not self._backgrounded:
                self._backgrounded = True
                log.info(
                    "%s",
                    kv(
                        "target_solve_moved",
                        policy=_name(policy),
                        to="worker",
                        last_solve_s=f">{SOLVE_WAIT_S}",
                    ),
                )
            msg = (
                f"the target solve takes longer than {SOLVE_WAIT_S}s: it goes on in the worker "
                "and the next interval uses it"
            )
            raise _Held("Solving", msg, solved=Condition("Unknown", "Solving", msg)) from None
        except BaseException:
            self.last_solve_s = time.perf_counter() - started
            raise
        self.last_solve_s = time.perf_counter() - started
        return result

    def _solve_inline(self, learned: Learned, cautious: bool) -> PolicyResult:
        started = time.perf_counter()
        try:
            return self._solve(learned, cautious)
        finally:
            self.last_solve_s = time.perf_counter() - started

    def _keep_for_next(
        self, result: PolicyResult, cautious: bool, policy: TrafficPolicy, interval: int
    ) -> None:
        """An inline answer that serves the next interval if that one takes its target from the
        worker (what the worker would have given it)."""
        done: Future[PolicyResult] = Future()
        done.set_result(result)
        self._background = _Background(done, cautious, policy, interval, time.perf_counter())

    def _start_background(self) -> None:
        """Hand this interval's fits to the worker (step() calls it after publishing: the
        worker's Python, building the LP and reading its answer, would otherwise hold the
        interpreter while the rollout runs)."""
        if self._to_solve is None or self._closed:
            return
        learned, cautious, policy, interval = self._to_solve
        self._to_solve = None
        executor = self._worker()
        if executor is None:
            return
        started = time.perf_counter()
        future = executor.submit(self._solve, learned, cautious)
        bg = _Background(future, cautious, policy, interval, started)
        future.add_done_callback(lambda f: self._background_done(bg, f))
        self._background = bg

    def _worker(self) -> ThreadPoolExecutor | None:
        """The one worker thread of target solves, started on first use; None once closed."""
        if self._executor is None and not self._closed:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slate-solve")
        return self._executor

    def _take_background(
        self, cautious: bool, policy: TrafficPolicy, interval: int
    ) -> PolicyResult | None:
        bg, self._background = self._background, None
        if bg is None:
            return None
        if bg.cautious != cautious or bg.policy is not policy or bg.interval != interval - 1:
            bg.future.cancel()  # stale; one already running finishes and is ignored
            return None
        try:
            return bg.future.result()  # waits when the worker is still at it
        except Exception:
            return None  # logged and counted by _background_done

    def _background_done(self, bg: _Background, future: Future[PolicyResult]) -> None:
        """Runs when a background solve ends: a failure is logged and counted at once (the next
        interval solves synchronously instead), never dropped silently."""
        if future.cancelled():
            return
        e = future.exception()
        if e is None:
            self.last_background_s = self.last_solve_s = time.perf_counter() - bg.started
            return
        if isinstance(e, SolveError):  # an answer the synchronous solve would give too
            log.warning(
                "%s", kv("background_solve_failed", policy=_name(bg.policy), error=_short(e))
            )
            return
        self.background_errors_total += 1
        log.error(
            "%s",
            kv("background_solve_crashed", policy=_name(bg.policy), error=_short(e)),
            exc_info=e,
        )
        if self.on_error is not None:
            try:
                self.on_error(e)
            except Exception:
                log.exception("%s", kv("on_error_failed"))

    def close(self) -> None:
        """Stop the background solver's worker thread, if one was started; an interval still
        running (the operator closes a loop whose policy went) starts no other."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _solve(self, learned: Learned, cautious: bool) -> PolicyResult:
        """Solve with each station's load kept to its measured range plus a step (none while
        cooling down after a rollback); widen the step when that admits no routing."""
        delta = self.policy.max_shift_per_interval
        total: dict[str, float] = defaultdict(float)
        for (svc, _c), w in learned.work_now.items():
            total[svc] += w
        last: InfeasibleError | None = None
        for widen in (
            (0.0, TRUST_STEP, 3 * TRUST_STEP) if cautious else (TRUST_STEP, 3 * TRUST_STEP)
        ):
            bounds: dict[tuple[str, str], tuple[float, float]] = {}
            for (svc, c), model in learned.latency.curves.items():
                seen = max(model.valid_up_to, learned.work_now.get((svc, c), 0.0))
                # Relative to the station's own measured load (an idle one: its fair share).
                step = widen * delta * total[svc]
                hi = min(seen + step, model.capacity * learned.scenario.objective.max_utilization)
                bounds[(svc, c)] = (0.0, max(hi, seen if widen == 0 else hi))
            try:
                return solve(learned.scenario, learned.latency, work_bounds=bounds)
            except InfeasibleError as e:
                last = e
        try:
            return solve(learned.scenario, learned.latency)
        except InfeasibleError:
            assert last is not None
            raise last from None

    def _roll_out(
        self,
        learned: Learned,
        target: Routing,
        target_objective: float,
        current: Routing,
        policy: TrafficPolicy,
        band: _Lazy | None = None,
    ) -> Routing:
        """The next weights: each key projected towards the target (safety.project), then the best
        of a few step lengths along that move by the learned model. No move when the learned
        model says the weights in force are within IMPROVEMENT_DEADBAND of the target (the LP's
        optimum jumps between near-equal vertices as the fits breathe; the proxies must not), or,
        when they did not move last interval, within the fits' uncertainty (`band`)."""
        delta = policy.max_shift_per_interval
        deployed = {s.name: set(s.clusters) for s in learned.scenario.app.services}
        routes: dict[tuple[str, str, str], Route] = {r.key: r for r in current.routes}
        start: dict[tuple[str, str, str], dict[str, float]] = {}
        step: dict[tuple[str, str, str], dict[str, float]] = {}
        limits: dict[tuple[str, str, str], float] = {}
        self._pending_limits = limits
        wanted: list[tuple[tuple[str, str, str], dict[str, float], str | None]] = []
        for r in target.routes:
            cur = current.get(*r.key)
            svc = r.to.split(".", 1)[0]
            where = deployed.get(svc, set())
            if cur is None or not cur.normalized():
                # Never published: start from where the mesh sends it now (the default rule).
                topology = learned.scenario.topology
                cur_w = dict(nearest_split(topology, r.from_cluster, sorted(where)))
            else:
                cur_w = {c: w for c, w in cur.normalized().items()}
            start[r.key] = cur_w
            tgt = {c: w for c, w in r.normalized().items() if c in where}
            local = r.from_cluster if r.from_cluster in where else None
            wanted.append((r.key, tgt, local))
        # Every key's projection (safety.project), all at once: project_many is project's
        # answers bit for bit.
        ml = policy.min_local_share
        fulls = project_many([(tgt, start[k], delta, local, ml) for k, tgt, local in wanted])
        shorter: list[tuple[tuple[str, str, str], Problem]] = []
        for (k, tgt, local), full in zip(wanted, fulls, strict=True):
            cur_w = start[k]
            # Step-size adaptation per key (Rprop): a move that turns a weight back against its
            # last move is made at SHRINK times the key's step limit, one that does not at
            # GROW times (up to maxShiftPerInterval); below safety's DEADBAND it is not made.
            limit = self.state.step_limits.get(k, delta)
            if self._key_reverses(k, cur_w, full):
                limit *= SHRINK
            else:
                limit = min(delta, max(limit * GROW, 2 * DEADBAND))
            limits[k] = limit
            if limit < DEADBAND:
                step[k] = cur_w
            elif limit >= delta:
                step[k] = full
            else:
                step[k] = {}  # below, at `limit`
                shorter.append((k, (tgt, cur_w, limit, local, ml)))
        for (k, _p), w in zip(shorter, project_many([p for _k, p in shorter]), strict=True):
            step[k] = w
        base = Routing(
            tuple(Route(*k, w) for k, w in start.items())
            + tuple(r for k, r in routes.items() if k not in start)
        )
        now = self._objective(learned, base)
        floor_needed = policy.min_local_share > 0 and any(
            k[1] in deployed.get(k[2].split(".", 1)[0], set())
            and w.get(k[1], 0.0) < policy.min_local_share - 1e-9
            for k, w in start.items()
        )
        # At rest (the last interval moved nothing), a new move must be predicted to gain more
        # than the fits' uncertainty, as one that turns a weight around must (_sticky_target):
        # the fits breathe between intervals, and a rest is left on evidence, not on a breath
        # (measured: hotel-3r mmc, simulator seed 1, left a rest at 2.9% from the optimum on a
        # predicted 0.5% gain that cost 2.3%).
        resting = self.state.still > 0
        deadband = IMPROVEMENT_DEADBAND
        if resting and band is not None:
            deadband = max(deadband, band.value)
        if (
            not floor_needed
            and math.isfinite(now)
            and now <= target_objective * (1 + deadband) + 1e-9
        ):
            return base
        best, best_obj = base, now
        for alpha in STEP_LENGTHS:
            cand = Routing(
                tuple(
                    Route(
                        *k,
                        _rounded(
                            {
                                c: (1 - alpha) * start[k].get(c, 0.0) + alpha * step[k].get(c, 0.0)
                                for c in sorted(set(start[k]) | set(step[k]))
                            }
                        ),
                    )
                    for k in start
                )
                + tuple(r for k, r in routes.items() if k not in start)
            )
            obj = self._objective(learned, cand)
            # Overloaded now (by the learned model): the full step towards a feasible target.
            first = alpha == STEP_LENGTHS[0]
            if (
                obj < best_obj * (1 - 1e-4)
                or (floor_needed and first)
                or (first and not math.isfinite(now))
            ):
                best, best_obj = cand, obj
                if floor_needed or not math.isfinite(now):
                    break
        if best is base and math.isfinite(now):
            # No step along the projected move helps (the move is a compromise of moves that pay
            # only together): ask the optimizer for the best weights within one step.
            boxed = self._solve_step(learned, start, limits, policy.min_local_share)
            if boxed is not None:
                obj = self._objective(learned, boxed)
                turns = band is not None and self._reverses(boxed, current)
                need = (
                    band.value if band is not None and (turns or resting) else IMPROVEMENT_DEADBAND
                )
                if obj < now * (1 - max(need, IMPROVEMENT_DEADBAND)):
                    keep = tuple(r for k, r in routes.items() if k not in start)
                    best = Routing(tuple(boxed.routes) + keep)
        # Stalled: no move, although the learned model puts the target further away than the fits'
        # largest uncertainty (step() counts these intervals; see STALL_INTERVALS).
        self._pending_stalled = (
            best is base and math.isfinite(now) and now > target_objective * (1 + MAX_BAND)
        )
        return Routing(tuple(sorted(best.routes, key=lambda r: r.key)))

    def _restart_rollout(self, policy: TrafficPolicy) -> None:
        """Clear the rollout's damping memory (each weight's last direction, each key's step
        limit): the next moves start at full step, as from a fresh start. The weights in force,
        the target and the fits are kept."""
        st = self.state
        log.info(
            "%s",
            kv(
                "rollout_restarted",
                policy=_name(policy),
                stalled_intervals=st.stalled,
                frozen_keys=sum(1 for v in st.step_limits.values() if v < DEADBAND),
            ),
        )
        st.directions.clear()
        st.step_limits.clear()
        st.stalled = 0

    def _band(
        self,
        learned: Learned,
        prev_curves: Mapping[tuple[str, str], FittedStation],
        routings: Sequence[Routing],
    ) -> float:
        """The uncertainty of the learned objective: the most the objective of any of `routings`
        moved between the previous interval's fits and this one's (same demand, call graph),
        relative, and at least MIN_BAND, at most MAX_BAND. A predicted gain below it is not
        evidence enough to turn a weight around or to leave a rest."""
        now = learned.latency.curves
        prev = LearnedModel({k: prev_curves.get(k, v) for k, v in now.items()})
        u = MIN_BAND
        for r in routings:
            if not r.routes:
                continue
            j_now = self._objective(learned, r)
            j_prev = self._objective(learned, r, prev)
            if math.isfinite(j_now) and math.isfinite(j_prev) and j_now > 0:
                u = max(u, abs(j_now - j_prev) / j_now)
        return min(u, MAX_BAND)

    def _sticky_target(self, learned: Learned, new: Routing, band: _Lazy) -> Routing:
        """Hysteresis on the target: a new target that would turn some weight back against its
        last move replaces the previous target only when, by this interval's fits, it is better
        by more than `band` (the fits' own uncertainty). Near the optimum the LP's answer jumps
        between near-equal routings as the fits breathe; following each jump would make the
        weights oscillate. A previous target the fits call overloaded is always replaced."""
        old = self.state.target
        if old is None or {r.key for r in old.routes} != {r.key for r in new.routes}:
            return new
        if not self._reverses(new, self.state.weights):
            return new
        j_old = self._objective(learned, old)
        j_new = self._objective(learned, new)
        if math.isfinite(j_old) and j_old <= j_new * (1 + band.value):
            return old
        return new

    def _probe_unmeasured(
        self, learned: Learned, target_j: float, weights: Routing, band: _Lazy
    ) -> tuple[Routing, tuple[str, str]] | None:
        """Bounded exploration of a cluster pair whose RTT nobody measured (closed-loop.md):
        the LP prices such a pair at UNMEASURED_RTT_MS, so no traffic goes over it on a guess.
        When the learned model, with the pair's RTT at its triangle bound through clusters whose
        RTT is known (the latency of relaying through them), beats this interval's target by
        more than `band`, one route key sends PROBE_SHARE of its calls over the pair: enough to
        measure the RTT by the next interval. The probe is an exploring move, rolled back when
        the measured mean latency rises (ROLLBACK_TOLERANCE); a pair is probed at most once per
        PROBE_RETRY intervals. Returns the weights with the probe and the pair, or None."""
        st = self.state
        topo = learned.scenario.topology
        unknown = {frozenset(p) for p in learned.unmeasured_rtt}
        cl = topo.clusters
        bounds: dict[frozenset[str], float] = {}
        for a, b in learned.unmeasured_rtt:
            last = st.probed.get((min(a, b), max(a, b)))
            if last is not None and st.interval - last < PROBE_RETRY:
                continue
            via = [
                topo.rtt(a, c) + topo.rtt(c, b)
                for c in cl
                if c not in (a, b)
                and frozenset((a, c)) not in unknown
                and frozenset((c, b)) not in unknown
            ]
            if via:
                bounds[frozenset((a, b))] = min(via)
        if not bounds or not math.isfinite(target_j):
            return None
        rtt = [
            tuple(bounds.get(frozenset((x, y)), topo.rtt(x, y)) if x != y else 0.0 for y in cl)
            for x in cl
        ]
        hopeful = replace(
            learned,
            scenario=replace(learned.scenario, topology=replace(topo, rtt_ms=tuple(rtt))),
        )
        try:
            result = self._solve(hopeful, cautious=False)
        except SolveError:
            return None
        if not result.evaluation.objective < target_j * (1 - band.value):
            return None
        best: tuple[float, tuple[str, str, str], str] | None = None
        for r in _external_routing(result.routing).routes:
            cur = weights.get(*r.key)
            if cur is None:
                continue
            for tc, w in r.normalized().items():
                if frozenset((r.from_cluster, tc)) in bounds and (best is None or w > best[0]):
                    best = (w, r.key, tc)
        if best is None or best[0] <= 1e-3:
            return None
        _w, key, tc = best
        in_force = st.weights.get(*key) or weights.get(*key)
        assert in_force is not None
        share = min(PROBE_SHARE, self.policy.max_shift_per_interval, best[0])
        cur_w = in_force.normalized()
        probe = {c: (1 - share) * v for c, v in cur_w.items()}
        probe[tc] = probe.get(tc, 0.0) + share
        routes = [r for r in weights.routes if r.key != key] + [Route(*key, _rounded(probe))]
        probed = (min(key[1], tc), max(key[1], tc))
        log.info(
            "%s",
            kv(
                "probe_unmeasured_rtt",
                pair=f"{probed[0]}<->{probed[1]}",
                key="/".join(key),
                share=round(share, 4),
                predicted_gain=round(1 - result.evaluation.objective / target_j, 4),
            ),
        )
        return Routing(tuple(sorted(routes, key=lambda r: r.key))), probed

    def _key_reverses(
        self, key: tuple[str, str, str], current: Mapping[str, float], new: Mapping[str, float]
    ) -> bool:
        last = self.state.directions
        for c in set(current) | set(new):
            d = new.get(c, 0.0) - current.get(c, 0.0)
            if abs(d) > 1e-6 and last.get((*key, c), 0) == (-1 if d > 0 else 1):
                return True
        return False

    def _reverses(self, routing: Routing, current: Routing, tol: float = DEADBAND) -> bool:
        """Would moving from `current` towards `routing` turn some weight back against the
        direction it last moved in (by more than `tol`)?"""
        last = self.state.directions
        if not last:
            return False
        for r in routing.routes:
            cur = current.get(*r.key)
            if cur is None:
                continue
            a, b = cur.normalized(), r.normalized()
            for c in set(a) | set(b):
                d = b.get(c, 0.0) - a.get(c, 0.0)
                if abs(d) > tol and last.get((*r.key, c), 0) == (-1 if d > 0 else 1):
                    return True
        return False

    def _solve_step(
        self,
        learned: Learned,
        start: Mapping[tuple[str, str, str], Mapping[str, float]],
        limits: Mapping[tuple[str, str, str], float],
        min_local: float,
    ) -> Routing | None:
        """The learned optimum with each weight boxed to its key's step limit around the weights
        in force, and only in the direction it last moved (turning a weight around goes through
        the target and its step-size adaptation, never through this fallback)."""
        last = self.state.directions
        app = learned.scenario.app
        box: list[WeightBound] = []
        for (fs, fc, to), cur in start.items():
            key = RouteKey(fs, fc, internal(to))
            try:
                where = app.service_of(internal(to)).clusters
            except KeyError:
                continue
            delta = limits.get((fs, fc, to), 0.0)
            if delta < DEADBAND:
                delta = 0.0
            for c in where:
                now = cur.get(c, 0.0)
                way = last.get((fs, fc, to, c), 0)
                lo = max(0.0, now - delta) if way <= 0 else now
                hi = min(1.0, now + delta) if way >= 0 else now
                if c == fc and min_local > 0:
                    lo = min(max(lo, min_local), hi)
                box.append(WeightBound(key, c, lo, hi))
        try:
            res = solve(learned.scenario, learned.latency, constraints=box)
        except SolveError as e:
            log.info("%s", kv("step_solve_failed", error=_short(e)))
            return None
        out = []
        for r in _external_routing(res.routing).routes:
            if r.key in start:
                out.append(Route(*r.key, _rounded(r.normalized())))
        return Routing(tuple(out))

    def _objective(
        self, learned: Learned, routing: Routing, latency: LearnedModel | None = None
    ) -> float:
        ev = self._evaluation(learned, routing, latency)
        return ev.objective if ev is not None and ev.feasible else math.inf

    def _evaluation(
        self, learned: Learned, routing: Routing, latency: LearnedModel | None = None
    ) -> Evaluation | None:
        """evaluate() of `routing` by the learned model (None when it fails), remembered for the
        rest of the interval: the rollout's line search, the hysteresis and the prediction ask
        for the same routings (the same Route objects) more than once."""
        model = latency or learned.latency
        key = (id(learned), id(model), frozenset(map(id, routing.routes)))
        hit = self._evaluations.get(key)
        if hit is not None:
            return hit[1]
        try:
            ev: Evaluation | None = evaluate(learned.scenario, _internal_routing(routing), model)
        except Exception:
            ev = None
        # The routing and model are kept with the answer, so the ids in the key stay theirs.
        self._evaluations[key] = ((routing, learned, model), ev)
        return ev

    def _maybe_roll_back(self, observed: Observed | None) -> Routing | None:
        st = self.state
        if st.before_exploring is None or observed is None or observed.mean_latency_ms is None:
            return None
        if st.last_observed_ms is None or not math.isfinite(st.last_observed_ms):
            return None
        if observed.mean_latency_ms > st.last_observed_ms * (1 + ROLLBACK_TOLERANCE):
            log.info(
                "%s",
                kv(
                    "exploration_was_rolled_back",
                    before_ms=round(st.last_observed_ms, 2),
                    now_ms=round(observed.mean_latency_ms, 2),
                ),
            )
            return st.before_exploring
        return None

    def _remember_solved(self, learned: Learned, result: PolicyResult, target: Routing) -> None:
        """solve() evaluated its routing by the model it solved with: when that is this
        interval's learned model (not a background answer from the last one), its evaluation is
        the target's, and the hysteresis and rollout need not evaluate the target again."""
        if self._fresh is not result:
            return
        pairs = zip(target.routes, result.routing.routes, strict=True)
        if any(internal(r.to) != s.to for r, s in pairs):
            return
        key = (id(learned), id(learned.latency), frozenset(map(id, target.routes)))
        self._evaluations[key] = ((target, learned, learned.latency), result.evaluation)

    def _predict(self, learned: Learned | None, routing: Routing) -> Prediction | None:
        if learned is None or not routing.routes:
            return None
        ev = self._evaluation(learned, routing)
        if ev is None:
            return None
        return Prediction(ev.mean_latency_ms, ev.egress_usd_per_hour, ev.max_utilization)


# ----------------------------------------------------------------------------------------------
@dataclass
class _Interval:
    """What one interval has found so far; ControlLoop.step's phases fill it in."""

    policy: TrafficPolicy
    now: datetime
    before: Routing
    """The weights in force when the interval started."""
    new_weights: Routing
    """What the interval publishes: the weights in force unless it decides to move."""
    obs: Observation | None = None
    observed: Observed | None = None
    problems: tuple[str, ...] = ()
    learned: Learned | None = None
    prev_curves: Mapping[tuple[str, str], FittedStation] = field(default_factory=dict)
    """The last interval's fits (the fits' uncertainty compares them with this one's)."""
    target: Routing | None = None
    exploring: bool = False
    held: _Held | None = None
    telemetry_ok: Condition = field(default_factory=lambda: Condition("True", "Fresh"))
    solved: Condition = field(default_factory=lambda: Condition("Unknown", "NotRun"))
    probed: tuple[str, str] | None = None
    restarted: bool = False
    query_s: float = 0.0
    learn_s: float = 0.0
    solve_s: float = 0.0


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Background:
    """A target solve for the next interval (ControlLoop._target_result)."""

    future: Future[PolicyResult]
    cautious: bool
    policy: TrafficPolicy
    interval: int  # the interval whose fits it solves
    started: float  # perf_counter


class _Lazy:
    """A float computed on first use (the fits' uncertainty costs six evaluations; most
    intervals never need it)."""

    def __init__(self, fn: Callable[[], float]) -> None:
        self._fn = fn
        self._value: float | None = None

    @property
    def value(self) -> float:
        if self._value is None:
            self._value = self._fn()
        return self._value


def observed_figures(policy: TrafficPolicy, obs: Observation) -> Observed:
    """Mean end-to-end latency as the gateways see it: the inclusive latency of the stations they
    call (weighted by the gateways' calls) plus the RTT of cross-cluster gateway calls; and the
    egress of every cross-cluster call priced with the policy."""
    lat_sum = 0.0
    rps_sum = 0.0
    usd_s = 0.0
    for (fs, fc, to, tc), rps in obs.calls.items():
        if rps <= 0:
            continue
        svc = to.split(".", 1)[0]
        if fs == INGRESS:
            station = obs.stations.get((svc, tc))
            if station is not None and station.latency_ms is not None:
                lat_sum += rps * (station.latency_ms + (obs.rtt_ms(fc, tc) or 0.0))
                rps_sum += rps
        if fc != tc:
            b = obs.bytes_per_call.get((fs, to))
            if b is not None:
                up = policy.egress_usd_per_gb.get((fc, tc), policy.egress_default_usd_per_gb)
                down = policy.egress_usd_per_gb.get((tc, fc), policy.egress_default_usd_per_gb)
                usd_s += rps * (b.request_kb * up + b.response_kb * down) * GB_PER_KB
    mean = lat_sum / rps_sum if rps_sum > 0 else None
    return Observed(mean, usd_s * 3600.0)


def _observed_routing(obs: Observation) -> Routing:
    return Routing(
        tuple(
            Route(r.from_service, r.from_cluster, r.to, dict(r.weights))
            for r in sorted(obs.routes.values(), key=lambda r: r.key)
            if r.weights
        )
    )


def _external_routing(r: Routing) -> Routing:
    return Routing(
        tuple(Route(x.from_service, x.from_cluster, external(x.to), x.weights) for x in r.routes),
        r.predicted,
    )


def _internal_routing(r: Routing) -> Routing:
    return Routing(
        tuple(Route(x.from_service, x.from_cluster, internal(x.to), x.weights) for x in r.routes)
    )


def _exploring(learned: Learned, result: PolicyResult) -> bool:
    """The target puts some station past the load it was measured at."""
    for st in result.evaluation.stations:
        model = learned.latency.curves.get((st.service, st.cluster))
        if model is None:
            continue
        seen = max(model.valid_up_to, learned.work_now.get((st.service, st.cluster), 0.0))
        if st.work_ms_per_s > seen * 1.02 + 1e-6:
            return True
    return False


def _fit_r2(learned: Learned | None) -> dict[tuple[str, str], float]:
    """R^2 of the curves fitted this interval from the stations' own samples."""
    if learned is None:
        return {}
    curves = learned.latency.curves
    return {k: curves[k].r2 for k in sorted(learned.measured) if math.isfinite(curves[k].r2)}


def _remember_directions(
    directions: dict[tuple[str, str, str, str], int], before: Routing, after: Routing
) -> None:
    """Record the sign of every weight that moved (by more than 1e-6) from `before` to `after`."""
    for r in after.routes:
        old = before.get(*r.key)
        if old is None:
            continue
        a, b = old.normalized(), r.normalized()
        for c in set(a) | set(b):
            d = b.get(c, 0.0) - a.get(c, 0.0)
            if abs(d) > 1e-6:
                directions[(*r.key, c)] = 1 if d > 0 else -1


def _limit_moves(current: Routing, new: Routing, delta: float) -> Routing:
    """`new` with every key's move from `current` at most `delta` (safety.limit_move): the
    rounding of published weights must not take a move past maxShiftPerInterval."""
    routes = []
    for r in new.routes:
        cur = current.get(*r.key)
        if cur is None or not cur.normalized():
            routes.append(r)
            continue
        a, b = cur.normalized(), r.normalized()
        routes.append(
            Route(*r.key, limit_move(a, b, delta)) if max_shift(a, b) > delta + 1e-9 else r
        )
    return Routing(tuple(routes), new.predicted)


def _rounded(w: Mapping[str, float]) -> dict[str, float]:
    out = {c: round(v, 6) for c, v in w.items() if v >= 1e-6}
    return out


def _routing_shift(a: Routing, b: Routing) -> float:
    keys = {r.key for r in a.routes} | {r.key for r in b.routes}
    best = 0.0
    for k in keys:
        ra, rb = a.get(*k), b.get(*k)
        if ra is None or rb is None:
            continue
        best = max(best, max_shift(ra.normalized(), rb.normalized()))
    return best


def _with_conditions(
    report: IntervalReport,
    telemetry: Condition,
    solved: Condition,
    applied: Condition,
    paused: bool,
) -> IntervalReport:
    conds = {"TelemetryFresh": telemetry, "Solved": solved, "Applied": applied}
    failing = next((c for c in (telemetry, solved, applied) if c.status != "True"), None)
    if paused:
        ready = Condition("True", "Paused", "paused: computing and reporting only")
    elif failing is not None and failing.reason != "DryRun":
        ready = Condition("False", failing.reason, failing.message)
    else:
        ready = Condition("True", applied.reason, applied.message)
    out = {"Ready": ready, **conds}
    if paused:
        out["Paused"] = Condition("True", "Paused", "spec.paused is true")
    return replace(report, conditions=out)


def _shortfall_text(result: PolicyResult) -> str:
    return "; ".join(s.describe() for s in result.shortfalls)[:400]


def _name(policy: TrafficPolicy) -> str:
    return f"{policy.namespace}/{policy.name}"


def _short(e: BaseException) -> str:
    s = str(e) or type(e).__name__
    s = s.replace("\n", " ")
    return s if len(s) <= 300 else s[:297] + "..."
