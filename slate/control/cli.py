"""`slate run` (the standalone controller) and `slate observe` (what slate learns from telemetry).

    slate run --policy TP.yaml --prometheus URL [--endpoints ENDPOINTS.yaml] [--xds-port P]
              [--metrics-port M] [--once] [--dry-run] [--state FILE] [--routes-file FILE]
    slate observe --policy TP.yaml --prometheus URL [--window 2m] [--lookback 30m]
              [--at RFC3339] [--format json|table|scenario]

Exit codes: 0 ok; 1 Prometheus unreachable or no data for the policy's services (one line);
2 bad input (one line naming the file and field). Heavy modules are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slate.model.errors import InputError
from slate.xds.cli import (
    add_metrics_tls_arguments,
    add_security_arguments,
    check_security_arguments,
    host_port,
    metrics_tls_from_args,
    security_from_args,
)

if TYPE_CHECKING:
    from slate.control.learned import Learned
    from slate.control.loop import SolveMode
    from slate.model.policy import TrafficPolicy
    from slate.telemetry.observation import Observation

EXIT_UNAVAILABLE = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the control loop against a live mesh (Prometheus in, xDS out)",
        description="Every rollout interval: observe Prometheus, learn the mesh, solve, move the "
        "weights safely and serve them over xDS (and/or write a route file).",
    )
    p.add_argument("--policy", required=True, type=Path, help="TrafficPolicy manifest (YAML)")
    p.add_argument("--prometheus", default=None, help="Prometheus URL (default: the policy's)")
    p.add_argument("--endpoints", type=Path, default=None, help="ENDPOINTS.yaml (slate xds serve)")
    p.add_argument("--xds-host", default="127.0.0.1", help="xDS listen address (loopback default)")
    p.add_argument("--xds-port", type=int, default=None, help="serve xDS here (needs --endpoints)")
    add_security_arguments(p)
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")
    p.add_argument(
        "--metrics-host", default="127.0.0.1", help="/metrics listen address (loopback default)"
    )
    add_metrics_tls_arguments(p)
    p.add_argument("--routes-file", type=Path, default=None, help="also write routes here")
    p.add_argument("--state", type=Path, default=None, help="loop state file (resume on restart)")
    p.add_argument("--once", action="store_true", help="run one interval, print its report, exit")
    p.add_argument("--dry-run", action="store_true", help="compute and report, publish nothing")
    p.add_argument(
        "--background-solve",
        nargs="?",
        choices=("auto", "always", "never"),
        const="always",
        default="auto",
        help="solve the target LP in a worker between intervals, off the interval's critical path "
        "(the target then lags the fits by one interval): 'auto' (default) once a target solve "
        "takes longer than 0.5 s, 'always' (also the bare flag), or 'never'",
    )
    p.add_argument("--lookback", default="30m", help="history used for learning (default 30m)")
    p.set_defaults(func=cmd_run)

    o = sub.add_parser(
        "observe",
        help="print what slate learns from Prometheus for a TrafficPolicy",
        description="Demand, call graph, station curves, observed splits, RTT and bytes per call, "
        "as learned from Istio's standard metrics (closed-loop.md).",
    )
    o.add_argument("--policy", required=True, type=Path, help="TrafficPolicy manifest (YAML)")
    o.add_argument("--prometheus", default=None, help="Prometheus URL (default: the policy's)")
    o.add_argument("--window", default=None, help="rate() window (default: the policy's, 2m)")
    o.add_argument("--lookback", default="30m", help="history for learning (default 30m)")
    o.add_argument("--at", default=None, help="evaluation time, RFC 3339 (default now)")
    o.add_argument("--format", choices=("json", "table", "scenario"), default="json")
    o.set_defaults(func=cmd_observe)


def _duration(text: str, flag: str) -> float:
    from slate.model.policy import parse_duration

    try:
        return float(parse_duration(text))
    except (ValueError, TypeError) as e:
        raise InputError(flag, f"not a duration like 30s, 2m, 1h: {text!r} ({e})") from None


def _policy(path: Path) -> TrafficPolicy:
    from slate.model.policy import load_policy

    return load_policy(path)


def _prometheus(args: argparse.Namespace, policy: TrafficPolicy) -> str:
    url = args.prometheus or policy.prometheus_url
    if not url:
        raise InputError("--prometheus", "required (the policy names no telemetry.prometheusUrl)")
    return str(url)


def cmd_observe(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from slate.control.learned import learn
    from slate.telemetry.observation import TelemetryUnavailable
    from slate.telemetry.prometheus import prometheus_source

    policy = _policy(args.policy)
    if args.window is not None:
        window = _duration(args.window, "--window")
        if window < 30:
            raise InputError("--window", f"must be at least 30s, got {args.window}")
        policy = replace(policy, window_s=window)
    lookback = _duration(args.lookback, "--lookback")
    at = None
    if args.at is not None:
        try:
            at = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError:
            raise InputError("--at", f"not an RFC 3339 time: {args.at!r}") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    url = _prometheus(args, policy)
    source = prometheus_source(url, lookback_s=lookback, step_s=min(30.0, policy.window_s))
    try:
        obs = source.observe(policy, at)
    except TelemetryUnavailable as e:
        print(f"slate: Prometheus unreachable: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if not obs.has_data:
        print(
            f"slate: no data in Prometheus at {url} for the services of {policy.namespace}/"
            f"{policy.name} (checked istio_requests_total over the last {lookback:g}s)",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    learned = learn(policy, obs)
    data = observation_json(policy, obs, learned)
    if args.format == "json":
        print(json.dumps(data, indent=1))
    elif args.format == "table":
        print(observation_table(data))
    else:
        import yaml

        print(yaml.safe_dump(scenario_dict(learned), sort_keys=False), end="")
    return 0


def observation_json(policy: TrafficPolicy, obs: Observation, learned: Learned) -> dict[str, Any]:
    """`slate observe`'s JSON (closed-loop.md)."""

    def num(x: float | None, nd: int = 4) -> float | None:
        return None if x is None or not math.isfinite(x) else round(x, nd)

    stations = []
    svc_eps = {
        s.name: [e for e in policy.endpoint_ids() if e.split(".")[0] == s.name]
        for s in policy.services
    }
    for (svc, c), st in sorted(obs.stations.items()):
        fit = learned.latency.curves.get((svc, c))
        per_req = (
            sum(
                st.rps_by_endpoint.get(e, 0.0) * learned.service_ms.get(e, 0.0)
                for e in svc_eps.get(svc, [])
            )
            / st.rps
            if st.rps > 0
            else None
        )
        curve = None
        if fit is not None and (svc, c) in learned.measured:
            curve = {
                "kind": fit.kind,
                "params": {
                    "capacity_ms_per_s": num(fit.capacity, 2),
                    "a": num(fit.a, 3),
                    "servers": fit.c,
                    "b": num(fit.b, 3),
                },
                "valid_up_to_rps": num(fit.valid_up_to / per_req, 2) if per_req else None,
            }
        samples = sum(1 for v in st.own_latency_series if math.isfinite(v))
        stations.append(
            {
                "service": svc,
                "cluster": c,
                "rps": num(st.rps, 3),
                "mean_latency_ms": num(st.own_latency_ms, 4),
                "samples": samples,
                "curve": curve,
            }
        )
    return {
        "at": obs.at.isoformat().replace("+00:00", "Z"),
        "window_s": obs.window_s,
        "ingress": [
            {"to": eid, "cluster": c, "rps": num(v, 3)}
            for (eid, c), v in sorted(obs.ingress.items())
            if v > 0
        ],
        "calls": [
            {
                "from": e.frm,
                "to": e.to,
                "per_request": num(e.per_request, 4),
                "confidence": e.confidence,
                "separable": e.separable,
            }
            for e in learned.calls
        ],
        "stations": stations,
        "routes": [r.to_json() for _k, r in sorted(obs.routes.items())],
        "rtt_ms": [
            {"from": a, "to": b, "ms": num(r.ms, 3), "source": r.source}
            for (a, b), r in sorted(obs.rtt.items())
        ],
        "bytes_kb": [
            {
                "from_service": b.from_service,
                "to": b.to,
                "request_kb": num(b.request_kb),
                "response_kb": num(b.response_kb),
            }
            for _k, b in sorted(obs.bytes_per_call.items())
        ],
        "service_ms": {k: round(v, 4) for k, v in sorted(learned.service_ms.items())},
        "problems": list(obs.problems),
    }


def observation_table(data: dict[str, Any]) -> str:
    lines = [f"at {data['at']}  window {data['window_s']:g}s", "", "ingress:"]
    lines += [f"  {i['to']:32s} {i['cluster']:16s} {i['rps']:>10} rps" for i in data["ingress"]]
    lines += ["", "calls (per request, confidence):"]
    lines += [
        f"  {c['from']:32s} -> {c['to']:32s} {c['per_request']:>8} {c['confidence']:>6}"
        + ("" if c["separable"] else "  (not separable)")
        for c in data["calls"]
    ]
    lines += ["", "stations (rps, own latency ms, samples, curve valid up to rps):"]
    for s in data["stations"]:
        valid = s["curve"]["valid_up_to_rps"] if s["curve"] else "-"
        lines.append(
            f"  {s['service']:24s} {s['cluster']:16s} {s['rps']!s:>10} "
            f"{s['mean_latency_ms']!s:>10} {s['samples']:>4} {valid!s:>10}"
        )
    lines += ["", "rtt ms:"]
    lines += [f"  {r['from']} -> {r['to']}: {r['ms']} ({r['source']})" for r in data["rtt_ms"]]
    if data["problems"]:
        lines += ["", "problems:"] + [f"  {p}" for p in data["problems"]]
    return "\n".join(lines)


def scenario_dict(learned: Learned) -> dict[str, Any]:
    """The learned model as a scenario file (scenario-format.md), learned curves in an extra
    `learned_curves` section (replicas are placeholders: 1 where a service runs)."""
    from slate.control.learned import external

    sc = learned.scenario
    topo = sc.topology
    rtt: dict[str, dict[str, float]] = {}
    egress: dict[str, Any] = {"default": 0.0}
    for i, a in enumerate(topo.clusters):
        for j, b in enumerate(topo.clusters):
            if i < j:
                rtt.setdefault(a, {})[b] = topo.rtt_ms[i][j]
            if i != j:
                egress.setdefault(a, {})[b] = topo.egress_usd_per_gb[i][j]
    services: dict[str, Any] = {}
    for s in sc.app.services:
        services[s.name] = {
            "replicas": dict(s.replicas),
            "endpoints": {
                (e.name or "default"): {
                    "service_ms": round(e.service_ms, 4),
                    "calls": [
                        {
                            "to": external(c.to) if "." in external(c.to) else f"{c.to}default",
                            "per_request": round(c.per_request, 4),
                            "request_kb": round(c.request_kb, 4),
                            "response_kb": round(c.response_kb, 4),
                        }
                        for c in e.calls
                    ],
                }
                for e in s.endpoints
            },
        }
    return {
        "name": sc.name.replace("/", "-"),
        "clusters": list(topo.clusters),
        "rtt_ms": rtt,
        "egress_usd_per_gb": egress,
        "objective": {
            "cost_weight_ms_per_usd_hour": sc.objective.cost_weight_ms_per_usd_hour,
            "max_utilization": sc.objective.max_utilization,
        },
        "services": services,
        "ingress": [
            {
                "endpoint": d.endpoint if not d.endpoint.endswith(".") else f"{d.endpoint}default",
                "rps": {c: round(v, 3) for c, v in d.rps.items()},
                "request_kb": round(d.request_kb, 4),
                "response_kb": round(d.response_kb, 4),
            }
            for d in sc.ingress
        ],
        "learned_curves": [
            {"service": s, "cluster": c, "kind": f.kind, **f.to_json()}
            for (s, c), f in sorted(learned.latency.curves.items())
        ],
    }


def cmd_run(args: argparse.Namespace) -> int:
    import logging
    import threading

    from slate.control.loop import ControlLoop
    from slate.control.publishers import Publisher, RoutesFilePublisher, XdsPublisher
    from slate.control.state import LoopState
    from slate.telemetry.prometheus import prometheus_source

    log = logging.getLogger("slate.control")
    check_security_arguments(args)  # flags before files, as `slate xds serve`
    metrics_tls = metrics_tls_from_args(args)
    if args.tls_cert is not None and args.xds_port is None:
        raise InputError("--tls-cert", "secures the xDS port: needs --xds-port")
    policy = _policy(args.policy)
    url = _prometheus(args, policy)
    lookback = _duration(args.lookback, "--lookback")
    if args.xds_port is not None and args.endpoints is None:
        raise InputError("--endpoints", "required with --xds-port (where the services run)")
    state = None
    if args.state is not None and args.state.exists():
        try:
            state = LoopState.load(args.state)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(str(args.state), f"not a loop state file: {e}") from None
    deployment: dict[str, tuple[str, ...]] = {}
    endpoints = None
    if args.endpoints is not None:
        from slate.xds.endpoints import load_endpoints

        endpoints = load_endpoints(args.endpoints)
        deployment = _deployment(endpoints)
    publishers: list[Publisher] = []
    if args.routes_file is not None:
        publishers.append(RoutesFilePublisher(args.routes_file))
    metrics = _LoopMetrics() if args.metrics_port is not None else None
    if metrics is not None:
        publishers.append(metrics)
    server = None
    cache = None
    if args.xds_port is not None and endpoints is not None and not args.dry_run:
        from slate.model.routing import Routing
        from slate.xds.cache import XdsCache

        cache = XdsCache(state.weights if state else Routing(()), endpoints)
        publishers.append(XdsPublisher(cache))
    source = prometheus_source(url, lookback_s=lookback, step_s=min(30.0, policy.interval_s))
    loop = ControlLoop(
        policy,
        source,
        publishers,
        state,
        deployment=deployment,
        dry_run=args.dry_run,
        solve_mode="inline" if args.once else _SOLVE_MODES[args.background_solve],
    )
    if args.once:
        report = loop.step()
        _save(args.state, loop)
        print(json.dumps(report.to_json(), indent=1))
        held = report.held_reason in ("PrometheusUnavailable", "NoData", "Stale")
        return EXIT_UNAVAILABLE if held else 0
    if cache is not None:
        from slate.xds.metrics import XdsMetrics

        # xDS streams and NACKs on the loop's /metrics (when served), TLS as `slate xds serve`.
        xds_metrics = XdsMetrics(metrics.registry if metrics is not None else None)
        credentials, authorizer = security_from_args(args, xds_metrics)
        from slate.xds.protocol import Limits

        server = _XdsThread(
            cache,
            args.xds_host,
            args.xds_port,
            metrics=xds_metrics,
            credentials=credentials,
            authorizer=authorizer,
            limits=Limits(max_connection_age_s=args.max_connection_age),
        )
        port = server.start()
        print(f"slate run: xDS on {host_port(args.xds_host, port)}", flush=True)
    if metrics is not None:
        try:
            metrics.serve(args.metrics_port, args.metrics_host, metrics_tls)
        except OSError as e:
            raise InputError("--metrics-port", f"cannot listen: {e.strerror}") from None
    stop = threading.Event()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def after(_e: BaseException) -> None:
        if metrics is not None:
            metrics.errors.inc()

    loop.on_error = after
    from slate.runtime import tune_gc

    tune_gc()  # fewer, larger GC passes: ~0.2 s off a 10x100 interval (slate/runtime.py)
    print(f"slate run: {policy.namespace}/{policy.name} every {policy.interval_s:g}s", flush=True)
    while not stop.is_set():
        started = datetime.now(UTC)
        try:
            loop.step()
            _save(args.state, loop)
        except Exception:  # never die silently: log, count, next interval
            loop.errors_total += 1
            after(RuntimeError())
            log.exception("interval failed")
        left = policy.interval_s - (datetime.now(UTC) - started).total_seconds()
        stop.wait(max(left, 0.0))
        policy = loop.policy
    loop.close()
    if server is not None:
        server.stop()
    return 0


_SOLVE_MODES: dict[str, SolveMode] = {"auto": "auto", "always": "background", "never": "inline"}
"""--background-solve -> ControlLoop's solve_mode."""


def _save(path: Path | None, loop: Any) -> None:
    if path is not None:
        loop.state.save(path)


def _deployment(endpoints: Any) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for svc, by_cluster in endpoints.services.items():
        out[svc] = [c for c, eps in by_cluster.items() if eps]
    return {k: tuple(v) for k, v in out.items()}


class _LoopMetrics:
    """prometheus-client metrics of the loop, as a publisher (one registry per process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.intervals = Counter(
            "slate_loop_intervals", "Intervals run", ["held"], registry=self.registry
        )
        self.errors = Counter(
            "slate_loop_errors", "Intervals that raised (logged)", registry=self.registry
        )
        self.shift = Gauge(
            "slate_loop_max_weight_shift", "Largest weight change", registry=self.registry
        )
        self.predicted = Gauge(
            "slate_loop_predicted_latency_ms",
            "Learned model's mean latency",
            registry=self.registry,
        )
        self.observed = Gauge(
            "slate_loop_observed_latency_ms", "Measured mean latency", registry=self.registry
        )
        self.seconds = Histogram(
            "slate_loop_interval_seconds", "Time per interval", ["phase"], registry=self.registry
        )
        self.background = Gauge(
            "slate_loop_target_from_background",
            "1 when the interval's target was solved in the worker from the last interval's fits",
            registry=self.registry,
        )
        self.restarts = Counter(
            "slate_loop_rollout_restarts",
            "Intervals that restarted a stalled rollout's step damping",
            registry=self.registry,
        )

    def publish(self, report: Any) -> None:
        self.intervals.labels(report.held_reason or "").inc()
        self.shift.set(report.max_weight_shift)
        if getattr(report, "rollout_restarted", False):
            self.restarts.inc()
        self.background.set(1.0 if getattr(report, "target_from_background", False) else 0.0)
        if report.predicted is not None and math.isfinite(report.predicted.mean_latency_ms):
            self.predicted.set(report.predicted.mean_latency_ms)
        if report.observed is not None and report.observed.mean_latency_ms is not None:
            self.observed.set(report.observed.mean_latency_ms)
        t = report.timings
        for phase, v in (("query", t.query_s), ("learn", t.learn_s), ("solve", t.solve_s)):
            self.seconds.labels(phase).observe(v)

    def serve(self, port: int, host: str, tls: Any = None) -> None:
        from slate.xds.metrics import serve_http

        serve_http(self.registry, port, host, tls=tls)


class _XdsThread:
    """The existing xDS server (slate/xds) on its own event loop thread."""

    def __init__(self, cache: Any, host: str, port: int, **server_args: Any) -> None:
        import asyncio
        import threading

        self.cache = cache
        self.server_args = server_args
        self.address = host_port(host, port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None

    def start(self) -> int:
        import asyncio

        from slate.xds.server import XdsServer

        self.thread.start()
        self.server = XdsServer(self.cache, **self.server_args)
        fut = asyncio.run_coroutine_threadsafe(self.server.start(self.address), self.loop)
        try:
            return int(fut.result(timeout=30))
        except OSError as e:
            raise InputError("--xds-port", str(e)) from None

    def stop(self) -> None:
        import asyncio

        fut = asyncio.run_coroutine_threadsafe(self.server.stop(grace=1.0), self.loop)
        fut.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _one_line(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= 300 else s[:297] + "..."
