"""The `--closed-loop` flags of `slate simulate` (closed-loop.md), in a module light enough for
building the parser: the closed loop itself (slate/sim/closed_loop.py) loads only when it runs."""

from __future__ import annotations

import argparse


def add_closed_loop_args(p: argparse.ArgumentParser) -> None:
    """The `--closed-loop` flags of `slate simulate` (closed-loop.md)."""
    p.add_argument("--closed-loop", action="store_true", help="run the control loop on the truth")
    p.add_argument("--intervals", type=int, default=30, help="closed loop: intervals (30)")
    p.add_argument("--seed", type=int, default=1, help="closed loop: noise seed (1)")
    p.add_argument("--truth", choices=("mmc", "distorted"), default="mmc")
    p.add_argument(
        "--demand-step",
        action="append",
        default=[],
        metavar="INTERVAL:CLUSTER:FACTOR",
        help="closed loop: scale one cluster's ingress demand from an interval on",
    )
    p.add_argument("--start", choices=("local",), default="local")
    p.add_argument("--max-shift", type=float, default=0.1, help="closed loop: rollout limit (0.1)")
