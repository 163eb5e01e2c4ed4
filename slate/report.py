"""Human-readable and JSON renderings of solve and simulate results (the CLI's output)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slate.evaluate import Evaluation
from slate.model.routing import Routing
from slate.model.scenario import Scenario
from slate.optimizer.capacity import Shortfall


@dataclass(frozen=True)
class Row:
    """One compared routing in `slate simulate`."""

    name: str
    evaluation: Evaluation


def _num(x: float, nd: int) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else round(x, nd)


def _fmt(x: float, nd: int = 2) -> str:
    if math.isinf(x):
        return "overload"
    if math.isnan(x):
        return "-"
    return f"{x:.{nd}f}"


def _ratio(x: float, ref: float) -> float:
    if math.isinf(x) and not math.isinf(ref):
        return math.inf
    if ref == 0:
        return 1.0 if x == 0 else math.inf
    return x / ref


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Aligned columns; the first `left` columns are text (left-aligned), the rest numbers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def routes_table(routing: Routing) -> str:
    rows = []
    for r in routing.routes:
        weights = ", ".join(
            f"{c} {w:.1%}" for c, w in sorted(r.normalized().items(), key=lambda cw: -cw[1])
        )
        rows.append([f"{r.from_service}@{r.from_cluster}", r.to, weights])
    out = _table(["from", "to", "weights"], rows, left=3)
    if routing.predicted is not None:
        p = routing.predicted
        out += (
            f"\n\npredicted: mean latency {_fmt(p.mean_latency_ms)} ms, egress "
            f"{_fmt(p.egress_usd_per_hour, 3)} USD/h, max utilization {_fmt(p.max_utilization, 3)}"
        )
    return out


def shortfall_warning(short: Sequence[Shortfall]) -> str:
    lines = [
        f"warning: the demand does not fit under max_utilization ({len(short)} "
        f"service{'s' if len(short) > 1 else ''} short); routes are the least overloaded ones:"
    ]
    lines += [f"  - {s.describe()}" for s in short]
    return "\n".join(lines)


def overload_warning(policy: str, ev: Evaluation) -> str:
    names = ", ".join(f"{s.service}@{s.cluster} ({s.utilization:.2f})" for s in ev.overloaded)
    return f"warning: the {policy} routing overloads {names}; the demand would fit with optimal"


def comparison_json(
    scenario: Scenario,
    rows: Sequence[Row],
    reference: Row,
    bound: float | None,
    bound_certified: bool | None = None,
) -> dict[str, Any]:
    ref = reference.evaluation
    policies = []
    for row in rows:
        ev = row.evaluation
        policies.append(
            {
                "policy": row.name,
                "mean_latency_ms": _num(ev.mean_latency_ms, 3),
                "ingress_latency_ms": {k: _num(v, 3) for k, v in ev.ingress_latency_ms.items()},
                "egress_usd_per_hour": _num(ev.egress_usd_per_hour, 4),
                "max_utilization": _num(ev.max_utilization, 4),
                "objective": _num(ev.objective, 3),
                "overloaded": [
                    {
                        "service": s.service,
                        "cluster": s.cluster,
                        "utilization": round(s.utilization, 4),
                    }
                    for s in ev.overloaded
                ],
                f"ratio_to_{reference.name}": {
                    "mean_latency_ms": _num(_ratio(ev.mean_latency_ms, ref.mean_latency_ms), 4),
                    "egress_usd_per_hour": _num(
                        _ratio(ev.egress_usd_per_hour, ref.egress_usd_per_hour), 4
                    ),
                    "objective": _num(_ratio(ev.objective, ref.objective), 4),
                },
            }
        )
    out = {
        "scenario": scenario.name,
        "total_rps": round(scenario.total_rps, 3),
        "cost_weight_ms_per_usd_hour": scenario.objective.cost_weight_ms_per_usd_hour,
        "max_utilization_cap": scenario.objective.max_utilization,
        f"{reference.name}_bound": None if bound is None else round(bound, 3),
        "policies": policies,
    }
    if bound_certified is not None:  # whether the bound is a lower bound (optimizer/solve.py)
        out[f"{reference.name}_bound_certified"] = bound_certified
    return out


def comparison_table(
    scenario: Scenario,
    rows: Sequence[Row],
    reference: Row,
    bound: float | None,
    bound_caveat: str | None = None,
) -> str:
    ref = reference.evaluation
    header = ["policy", "mean ms", "egress USD/h", "max util", "objective", f"x {reference.name}"]
    body = [
        [
            row.name,
            _fmt(row.evaluation.mean_latency_ms),
            _fmt(row.evaluation.egress_usd_per_hour, 3),
            _fmt(row.evaluation.max_utilization, 3),
            _fmt(row.evaluation.objective),
            _fmt(_ratio(row.evaluation.objective, ref.objective), 3),
        ]
        for row in rows
    ]
    parts = [
        f"scenario {scenario.name}: {len(scenario.topology.clusters)} clusters, "
        f"{len(scenario.app.services)} services, {len(scenario.app.endpoints)} endpoints, "
        f"{scenario.total_rps:g} rps; objective = mean ms + "
        f"{scenario.objective.cost_weight_ms_per_usd_hour:g} x USD/h",
        "",
        _table(header, body),
    ]
    if bound is not None:
        line = f"\n{reference.name} LP bound: {bound:.2f}"
        if bound_caveat:
            line += f" ({bound_caveat})"
        elif bound > ref.objective:
            line += (
                f" (above the achieved objective by {bound - ref.objective:.2g}: solver "
                "tolerance and weights rounded to 6 decimals)"
            )
        parts.append(line)
    entries = list(dict.fromkeys(e for row in rows for e in row.evaluation.ingress_latency_ms))
    parts += [
        "",
        "mean latency per ingress endpoint, ms:",
        _table(
            ["policy", *entries],
            [
                [
                    row.name,
                    *(_fmt(row.evaluation.ingress_latency_ms.get(e, math.nan)) for e in entries),
                ]
                for row in rows
            ],
        ),
    ]
    for row in rows:
        if row.evaluation.overloaded:
            names = ", ".join(
                f"{s.service}@{s.cluster} ({s.utilization:.2f})" for s in row.evaluation.overloaded
            )
            parts.append(f"\n{row.name}: overloaded stations: {names}")
    return "\n".join(parts)
