"""The queries slate issues, as values: rendered to PromQL for Prometheus, evaluated directly by the
in-memory store. Both backends return `SeriesResult`s, so one parser builds the Observation.

Only three query forms exist (docs/telemetry.md lists every query slate runs):

- `rate`:      `sum by (L...) (rate(METRIC{MATCHERS}[W]))`
- `resets`:    `sum by (L...) (resets(METRIC{MATCHERS}[W]))`
- `newest`:    `max(timestamp(METRIC{MATCHERS}))`

each run as an instant query (at one time) or a range query (start, end, step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

Form = Literal["rate", "resets", "newest"]
MatchOp = Literal["=", "!=", "=~", "!~"]


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{out}"'


def promql_duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


@dataclass(frozen=True)
class Matcher:
    label: str
    op: MatchOp
    value: str

    def promql(self) -> str:
        return f"{self.label}{self.op}{promql_string(self.value)}"


@dataclass(frozen=True)
class Query:
    """One query: `form` over `metric` selected by `matchers`, summed by `by` (for `rate` and
    `resets`), with range `window_s`. `name` is slate's handle for the answer (not PromQL)."""

    name: str
    form: Form
    metric: str
    matchers: tuple[Matcher, ...]
    by: tuple[str, ...] = ()
    window_s: float = 120.0

    def selector(self) -> str:
        inner = ",".join(m.promql() for m in self.matchers)
        return f"{self.metric}{{{inner}}}"

    def promql(self) -> str:
        sel = self.selector()
        if self.form == "newest":
            return f"max(timestamp({sel}))"
        by = ", ".join(self.by)
        return f"sum by ({by}) ({self.form}({sel}[{promql_duration(self.window_s)}]))"


@dataclass(frozen=True)
class SeriesResult:
    """One series of an answer: its labels, and its (timestamp, value) points (a single point for
    an instant query). Values may be NaN or infinite as Prometheus returned them."""

    labels: Mapping[str, str]
    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]


class Backend(Protocol):
    """Answers `Query`s. Raises `TelemetryUnavailable` when it cannot be reached, and
    `QueryFailed` when it rejected one query (bad request); an empty answer is an empty list."""

    def instant(self, query: Query, at: float) -> list[SeriesResult]: ...

    def range(self, query: Query, start: float, end: float, step: float) -> list[SeriesResult]: ...


class QueryFailed(Exception):
    """The backend answered but refused this query (e.g. HTTP 400/422): reported, not raised."""


def from_prometheus_json(result: Sequence[Mapping[str, Any]]) -> list[SeriesResult]:
    """Prometheus's `data.result` of a vector or matrix answer -> SeriesResults.

    Vector items carry `"value": [ts, "v"]`, matrix items `"values": [[ts, "v"], ...]`; values are
    strings (`"NaN"`, `"+Inf"` included), which float() reads."""
    out: list[SeriesResult] = []
    for item in result:
        labels = {str(k): str(v) for k, v in dict(item.get("metric", {})).items()}
        points = item["values"] if "values" in item else [item["value"]]
        times = np.array([float(p[0]) for p in points], dtype=float)
        values = np.array([float(p[1]) for p in points], dtype=float)
        out.append(SeriesResult(labels, times, values))
    return out


def to_prometheus_json(results: Sequence[SeriesResult], *, matrix: bool) -> list[dict[str, Any]]:
    """The inverse of `from_prometheus_json` (Prometheus's formatting of floats)."""

    def fmt(v: float) -> str:
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(float(v))

    out: list[dict[str, Any]] = []
    for r in results:
        pts = [[float(t), fmt(float(v))] for t, v in zip(r.times, r.values, strict=True)]
        if matrix:
            out.append({"metric": dict(r.labels), "values": pts})
        else:
            out.append({"metric": dict(r.labels), "value": pts[0]})
    return out
