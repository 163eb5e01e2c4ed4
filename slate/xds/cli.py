"""`slate xds ...` subcommands (placeholder until the xDS server lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("xds", help="serve routing to Envoy over xDS")
    p.set_defaults(func=lambda _args: 0)
