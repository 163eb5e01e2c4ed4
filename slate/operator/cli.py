"""`slate operator`: run the TrafficPolicy operator (one replica; run 2+ for high availability).

    slate operator [--namespace NS ... | --all-namespaces] --prometheus URL [--xds-port 18000]
                   [--metrics-port PORT] [--liveness http://127.0.0.1:8080/healthz]
                   [--cluster NAME] [--kubeconfig PATH] [--webhook-port 9443]

kopf and kubernetes are imported inside the command, so `slate --help` stays fast. Bad flags exit
2 with one line naming the flag.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlparse

from slate.logs import LEVELS, configure
from slate.model.errors import InputError
from slate.xds.cli import (
    add_metrics_tls_arguments,
    add_security_arguments,
    check_security_arguments,
    metrics_tls_from_args,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "operator",
        help="run the TrafficPolicy Kubernetes operator",
        description="Watch TrafficPolicy resources, run a control loop per policy (leader only, "
        "by Lease), write status, and serve the weights to Envoy over xDS (every replica).",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    p.add_argument(
        "--prometheus",
        required=True,
        help="Prometheus base URL (a policy's spec.telemetry.prometheusUrl overrides it)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--xds-port", type=int, default=18000, help="xDS gRPC port (default 18000)")
    add_security_arguments(p)
    add_metrics_tls_arguments(p)
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on this port")
    p.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve a liveness probe, e.g. http://127.0.0.1:8080/healthz",
    )
    p.add_argument(
        "--cluster",
        default=os.environ.get("SLATE_CLUSTER"),
        help="this cluster's name in TrafficPolicies (Istio's CLUSTER_ID); its EndpointSlices "
        "are watched (default $SLATE_CLUSTER)",
    )
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster)")
    p.add_argument(
        "--operator-namespace",
        default=os.environ.get("POD_NAMESPACE", "slate-system"),
        help="namespace of the leader Lease and remote-cluster Secrets (default $POD_NAMESPACE "
        "or slate-system)",
    )
    p.add_argument("--lease-seconds", type=float, default=15.0, help="Lease duration (default 15)")
    p.add_argument(
        "--webhook-port",
        type=int,
        default=None,
        help="serve the validating admission webhook on this port and manage its configuration",
    )
    p.add_argument(
        "--webhook-host", default="127.0.0.1", help="webhook address the API server calls"
    )
    p.add_argument("--webhook-cert", default=None, help="PEM certificate (default: self-signed)")
    p.add_argument("--webhook-key", default=None, help="PEM key of --webhook-cert")
    p.add_argument(
        "--istio-tls-metadata",
        action="store_true",
        help="tag endpoints with tlsMode: istio (Istio auto-mTLS)",
    )
    p.add_argument("--log-level", default=None, choices=LEVELS)
    p.set_defaults(func=run_operator)


def _port(value: int | None, flag: str) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise InputError(flag, f"must be a port 0-65535, got {value}")


def run_operator(args: argparse.Namespace) -> int:
    if args.log_level:
        configure(args.log_level)
    url = urlparse(args.prometheus)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InputError("--prometheus", f"must be an http(s) URL, got {args.prometheus!r}")
    for value, flag in (
        (args.xds_port, "--xds-port"),
        (args.metrics_port, "--metrics-port"),
        (args.webhook_port, "--webhook-port"),
    ):
        _port(value, flag)
    if args.liveness:
        live = urlparse(args.liveness)
        if live.scheme != "http" or not live.port:
            raise InputError("--liveness", f"must be http://HOST:PORT/PATH, got {args.liveness!r}")
    check_security_arguments(args)
    metrics_tls_from_args(args)  # checked (and the files read) before anything starts
    if not args.lease_seconds >= 2:
        raise InputError("--lease-seconds", f"must be >= 2, got {args.lease_seconds}")
    if args.kubeconfig and not os.path.exists(args.kubeconfig):
        raise InputError("--kubeconfig", f"no such file: {args.kubeconfig}")

    from slate.operator.app import OperatorConfig, run
    from slate.runtime import tune_gc

    tune_gc()  # the loops' per-interval garbage and the xDS streams (slate/runtime.py)

    lease = float(args.lease_seconds)
    cfg = OperatorConfig(
        prometheus=args.prometheus,
        namespaces=None if args.all_namespaces or not args.namespaces else list(args.namespaces),
        kubeconfig=args.kubeconfig,
        host=args.host,
        xds_port=args.xds_port,
        metrics_port=args.metrics_port,
        liveness=args.liveness,
        cluster=args.cluster,
        operator_namespace=args.operator_namespace,
        lease_s=lease,
        renew_deadline_s=lease * 2 / 3,
        retry_s=max(0.5, lease / 7.5),
        webhook_port=args.webhook_port,
        webhook_host=args.webhook_host,
        webhook_cert=args.webhook_cert,
        webhook_key=args.webhook_key,
        istio_tls_metadata=args.istio_tls_metadata,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        identity_table=args.identity_table,
        max_connection_age_s=args.max_connection_age,
        metrics_tls_cert=args.metrics_tls_cert,
        metrics_tls_key=args.metrics_tls_key,
        metrics_tls_client_ca=args.metrics_tls_client_ca,
    )
    return run(cfg)
