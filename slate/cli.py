"""The `slate` command line.

Exit codes: 0 ok; 1 the solver failed (a bug or numerical trouble, with its message);
2 bad input (one line naming the file and field, no traceback); 3 routes were printed but the
demand does not fit under max_utilization (the least overloaded routing, with a warning).

Start-up stays fast: building the parser imports no scipy, pydantic, grpc, kopf or kubernetes.
Each command imports what it uses inside its function; each package's subcommands come from its
own `register(sub)` (listed in SUBCOMMANDS), whose module must import heavy things lazily too
(tests/test_startup.py checks `slate --help` and `slate solve --help`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Literal, NoReturn

from slate import logs
from slate.model.errors import InputError

EXIT_OK = 0
EXIT_SOLVER = 1
EXIT_INPUT = 2
EXIT_OVER_CAPACITY = 3

POLICIES: tuple[Literal["optimal", "local", "global", "waterfall"], ...] = (
    "optimal",
    "local",
    "global",
    "waterfall",
)
"""`slate solve --policy` choices: slate.optimizer.solve.POLICIES, without importing scipy."""

SUBCOMMANDS = ("slate.xds.cli", "slate.control.cli", "slate.operator.cli")
"""Modules whose `register(sub)` adds their subcommands (each imports heavy modules lazily)."""

STRICT_HELP = "refuse keys the file format does not define (default: warn and ignore them)"


def _warn(e: InputError) -> None:
    print(f"slate: warning: {e}", file=sys.stderr)


def _cmd_solve(args: argparse.Namespace) -> int:
    from slate import report
    from slate.model.scenario_file import load_scenario
    from slate.optimizer.solve import run_policy

    scenario = load_scenario(args.scenario, strict=args.strict, warn=_warn)
    result = run_policy(scenario, args.policy)
    if args.format == "json":
        print(result.routing.dumps())
    else:
        print(report.routes_table(result.routing))
    if result.shortfalls:
        print(report.shortfall_warning(result.shortfalls), file=sys.stderr)
        return EXIT_OVER_CAPACITY
    if result.evaluation.overloaded:
        print(report.overload_warning(args.policy, result.evaluation), file=sys.stderr)
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.closed_loop:
        from slate.sim import closed_loop

        return closed_loop.cmd_simulate_closed_loop(args)
    import json

    from slate import report
    from slate.evaluate import evaluate
    from slate.model.routes_check import check_routing
    from slate.model.routing import load_routing
    from slate.model.scenario_file import load_scenario
    from slate.optimizer.solve import run_policy, solve

    scenario = load_scenario(args.scenario, strict=args.strict, warn=_warn)
    optimal = solve(scenario)
    reference = report.Row("optimal", optimal.evaluation)
    if args.routes:
        routing = load_routing(args.routes, strict=args.strict, warn=_warn)
        check_routing(routing, scenario, source=args.routes)
        rows = [report.Row("routes", evaluate(scenario, routing)), reference]
    else:
        rows = [reference] + [
            report.Row(p, run_policy(scenario, p).evaluation) for p in POLICIES if p != "optimal"
        ]
    if args.format == "json":
        print(
            json.dumps(
                report.comparison_json(
                    scenario, rows, reference, optimal.bound, optimal.bound_certified
                ),
                indent=1,
            )
        )
    else:
        print(
            report.comparison_table(scenario, rows, reference, optimal.bound, optimal.bound_caveat)
        )
    if optimal.shortfalls:
        print(report.shortfall_warning(optimal.shortfalls), file=sys.stderr)
        return EXIT_OVER_CAPACITY
    return EXIT_OK


USAGE_ERROR_CHARS = 200
"""A usage error's message is cut to this many characters: argparse echoes the user's words."""


class _Parser(argparse.ArgumentParser):
    """argparse with the house rule for bad input: one line on stderr, exit 2.

    argparse's own `error()` prints the whole usage block first (several lines); the one line here
    names the problem and points at `--help`. Subparsers inherit the class (`parser_class`).
    """

    def error(self, message: str) -> NoReturn:
        if len(message) > USAGE_ERROR_CHARS:
            message = message[: USAGE_ERROR_CHARS - 3] + "..."
        message = message.replace("\n", " ")
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="slate",
        description="Service-layer traffic engineering for multi-cluster Envoy/Istio meshes.",
        epilog="exit codes: 0 ok, 1 solver failure, 2 bad input, 3 demand over capacity",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logs (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("solve", help="print the routing for a scenario file")
    p.add_argument("scenario", help="scenario YAML (see scenario-format.md)")
    p.add_argument("--policy", choices=POLICIES, default="optimal")
    p.add_argument("--format", choices=("json", "table"), default="json")
    p.add_argument("--strict", action="store_true", help=STRICT_HELP)
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser("simulate", help="compare every policy (or given routes) on a scenario")
    p.add_argument("scenario", help="scenario YAML (see scenario-format.md)")
    p.add_argument("--routes", help="a route file (slate solve output) to evaluate")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--strict", action="store_true", help=STRICT_HELP)
    p.set_defaults(func=_cmd_simulate)
    from slate.sim import closed_loop_args

    closed_loop_args.add_closed_loop_args(p)

    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.verbose)
    try:
        code: int = args.func(args)
    except InputError as e:
        print(f"slate: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:
        solver_error = sys.modules.get("slate.optimizer.solve")
        if solver_error is not None and isinstance(e, solver_error.SolveError):
            print(f"slate: solver failed: {e}", file=sys.stderr)
            return EXIT_SOLVER
        raise
    return code


if __name__ == "__main__":
    sys.exit(main())
