"""The `slate` command line.

Every subcommand turns input problems into one line on stderr and exit code 2 (no traceback);
anything else that goes wrong is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from slate.model.errors import InputError

EXIT_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slate",
        description="Service-layer traffic engineering for multi-cluster Envoy/Istio meshes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from slate.xds import cli as xds_cli

    xds_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except InputError as e:
        print(f"slate: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
