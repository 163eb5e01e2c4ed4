"""An in-memory series store that answers slate's queries the way Prometheus 2.x would.

The simulator writes scrapes into it (`append`: one timestamp, one metric, values per label set);
`MemoryBackend` evaluates exactly the query forms of `slate.telemetry.queries` with Prometheus's
semantics, so the same parser turns its answers into an Observation:

- `rate(m[w])` at time t uses the samples with t - w <= ts <= t (Prometheus 2.x selects the range
  closed on both ends), needs two of them, adds back counter resets (a drop adds the previous
  value), and extrapolates like Prometheus's `extrapolatedRate`: to each range boundary when the
  gap is under 1.1 x the mean sample spacing, else by half a spacing, never below zero at the
  start; then divides by w.
- `resets(m[w])` counts drops between consecutive samples in the range.
- `max(timestamp(m))` is the newest sample time at or before t within 5 minutes (Prometheus's
  default lookback delta).
- `sum by (...)` adds the series that have a value; a group with none is absent (no series).

A sample missing from a scrape (a partial scrape) is simply absent, as in Prometheus. Agreement with
a real Prometheus on the same samples is to float rounding (tests/telemetry/test_prometheus.py).
Memory: one dense float64 matrix per metric (scrapes x series), pruned to `retention_s`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from slate.telemetry.queries import Matcher, Query, SeriesResult

LabelKey = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name (without `__name__`)."""

LOOKBACK_DELTA_S = 300.0


def label_key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


@dataclass
class _Table:
    """One metric: series labels, and a scrapes x series matrix of values (NaN = no sample)."""

    index: dict[LabelKey, int] = field(default_factory=dict)
    labels: list[dict[str, str]] = field(default_factory=list)
    times: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    rows: int = 0
    mat: npt.NDArray[np.float64] = field(default_factory=lambda: np.full((0, 0), np.nan))
    select_cache: dict[tuple[tuple[Matcher, ...], tuple[str, ...]], tuple[int, object]] = field(
        default_factory=dict
    )

    def columns(self, keys: Sequence[LabelKey]) -> npt.NDArray[np.intp]:
        cols = np.empty(len(keys), dtype=np.intp)
        for i, k in enumerate(keys):
            j = self.index.get(k)
            if j is None:
                j = len(self.labels)
                self.index[k] = j
                self.labels.append(dict(k))
            cols[i] = j
        return cols

    def add_row(
        self, t: float, cols: npt.NDArray[np.intp], values: npt.NDArray[np.float64]
    ) -> None:
        n_series = len(self.labels)
        cap_rows, cap_cols = self.mat.shape
        if self.rows >= cap_rows or n_series > cap_cols:
            new_rows = max(cap_rows, 16) * 2 if self.rows >= cap_rows else cap_rows
            new_cols = max(n_series, int(cap_cols * 1.5)) if n_series > cap_cols else cap_cols
            mat = np.full((new_rows, new_cols), np.nan)
            mat[: self.rows, :cap_cols] = self.mat[: self.rows]
            self.mat = mat
            times = np.full(new_rows, np.nan)
            times[: self.rows] = self.times[: self.rows]
            self.times = times
        if self.rows and t <= self.times[self.rows - 1]:
            raise ValueError(f"scrape at {t} is not after the previous one")
        self.times[self.rows] = t
        self.mat[self.rows, cols] = values
        self.rows += 1

    def prune(self, before: float) -> None:
        keep_from = int(np.searchsorted(self.times[: self.rows], before, side="left"))
        if keep_from < max(64, self.rows // 2):
            return
        n = self.rows - keep_from
        self.mat[:n] = self.mat[keep_from : self.rows]
        self.mat[n : self.rows] = np.nan
        self.times[:n] = self.times[keep_from : self.rows]
        self.rows = n

    def select(self, matchers: tuple[Matcher, ...], by: tuple[str, ...]) -> _Selection:
        key = (matchers, by)
        hit = self.select_cache.get(key)
        if hit is not None and hit[0] == len(self.labels):
            sel = hit[1]
            assert isinstance(sel, _Selection)
            return sel
        cols: list[int] = []
        group_of: list[int] = []
        groups: dict[tuple[str, ...], int] = {}
        for j, labels in enumerate(self.labels):
            if all(_matches(m, labels.get(m.label, "")) for m in matchers):
                g = tuple(labels.get(b, "") for b in by)
                cols.append(j)
                group_of.append(groups.setdefault(g, len(groups)))
        sel = _Selection(
            np.array(cols, dtype=np.intp),
            np.array(group_of, dtype=np.intp),
            [{b: v for b, v in zip(by, g, strict=True) if v != ""} for g in groups],
        )
        self.select_cache[key] = (len(self.labels), sel)
        return sel


@dataclass(frozen=True)
class _Selection:
    cols: npt.NDArray[np.intp]
    group_of: npt.NDArray[np.intp]
    group_labels: list[dict[str, str]]


def _matches(m: Matcher, value: str) -> bool:
    import re

    if m.op == "=":
        return value == m.value
    if m.op == "!=":
        return value != m.value
    hit = re.fullmatch(m.value, value) is not None
    return hit if m.op == "=~" else not hit


def extrapolated_rate(
    times: npt.NDArray[np.float64],
    block: npt.NDArray[np.float64],
    range_start: float,
    range_end: float,
    window_s: float,
) -> npt.NDArray[np.float64]:
    """Prometheus's `rate()` of each column of `block` (rows = samples at `times`, NaN = absent)
    over [range_start, range_end]; NaN where a column has fewer than two samples."""
    k, s = block.shape
    out = np.full(s, np.nan)
    if k < 2 or s == 0:
        return out
    present = ~np.isnan(block)
    n = present.sum(axis=0)
    ok = n >= 2
    if not ok.any():
        return out
    rows = np.arange(k)[:, None]
    first_i = np.where(present, rows, k).min(axis=0)
    last_i = np.where(present, rows, -1).max(axis=0)
    # forward-fill each column so drops between present samples are consecutive differences
    idx = np.where(present, rows, 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = np.take_along_axis(np.nan_to_num(block, nan=0.0), idx, axis=0)
    prev = filled[:-1]
    drop = (filled[1:] < prev) & present[1:] & (rows[1:] > first_i[None, :])
    resets = np.where(drop, prev, 0.0).sum(axis=0)
    cols = np.arange(s)
    fi = np.minimum(first_i, k - 1)
    li = np.maximum(last_i, 0)
    first_v = block[fi, cols]
    last_v = block[li, cols]
    first_t = times[fi]
    last_t = times[li]
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = last_v - first_v + resets
        sampled = last_t - first_t
        avg = sampled / np.maximum(n - 1, 1)
        to_start = first_t - range_start
        to_end = range_end - last_t
        to_zero = np.where(
            (delta > 0) & (first_v >= 0),
            sampled * (first_v / np.where(delta > 0, delta, 1)),
            np.inf,
        )
        to_start = np.minimum(to_start, to_zero)
        thr = avg * 1.1
        ext = (
            sampled
            + np.where(to_start < thr, to_start, avg / 2)
            + np.where(to_end < thr, to_end, avg / 2)
        )
        rate = delta * (ext / sampled) / window_s
    out[ok] = rate[ok]
    return out


def _resets(block: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    k, s = block.shape
    if k == 0:
        return np.full(s, np.nan)
    present = ~np.isnan(block)
    rows = np.arange(k)[:, None]
    idx = np.where(present, rows, 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = np.take_along_axis(np.nan_to_num(block, nan=0.0), idx, axis=0)
    first_i = np.where(present, rows, k).min(axis=0)
    drop = (filled[1:] < filled[:-1]) & present[1:] & (rows[1:] > first_i[None, :])
    out = drop.sum(axis=0).astype(float)
    out[~present.any(axis=0)] = np.nan
    return np.asarray(out, dtype=float)


class MemoryBackend:
    """The simulator's Prometheus: scrapes in, query answers out (see the module docstring)."""

    def __init__(self, retention_s: float = 4 * 3600.0) -> None:
        self.retention_s = retention_s
        self._tables: dict[str, _Table] = {}

    # --- writing ----------------------------------------------------------------------------------

    def append(
        self,
        t: float,
        metric: str,
        keys: Sequence[LabelKey],
        values: Sequence[float] | npt.NDArray[np.float64],
    ) -> None:
        """Record one scrape of `metric` at time `t` (unix s, ms precision): one value per series
        `keys[i]` (sorted label pairs, see `label_key`). Series not listed are absent at `t`."""
        table = self._tables.setdefault(metric, _Table())
        cols = table.columns(keys)
        table.add_row(round(t, 3), cols, np.asarray(values, dtype=float))
        table.prune(t - self.retention_s)

    def metrics(self) -> list[str]:
        return sorted(self._tables)

    def series(self, metric: str) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """Every stored sample of `metric`, per series (for the OpenMetrics writer and tests)."""
        table = self._tables.get(metric)
        if table is None:
            return []
        out = []
        times = table.times[: table.rows]
        for j, labels in enumerate(table.labels):
            col = table.mat[: table.rows, j]
            pts = [(float(t), float(v)) for t, v in zip(times, col, strict=True) if v == v]
            if pts:
                out.append((dict(labels), pts))
        return out

    # --- querying ---------------------------------------------------------------------------------

    def instant(self, query: Query, at: float) -> list[SeriesResult]:
        return self._evaluate(query, np.array([round(at, 3)]))

    def range(self, query: Query, start: float, end: float, step: float) -> list[SeriesResult]:
        n = int(np.floor((end - start) / step + 1e-9)) + 1
        grid = np.round(start + step * np.arange(n), 3)
        return self._evaluate(query, grid)

    def _evaluate(self, query: Query, grid: npt.NDArray[np.float64]) -> list[SeriesResult]:
        table = self._tables.get(query.metric)
        if table is None or table.rows == 0:
            return []
        times = table.times[: table.rows]
        if query.form == "newest":
            return self._newest(table, query, grid)
        sel = table.select(query.matchers, query.by)
        n_groups = len(sel.group_labels)
        if n_groups == 0:
            return []
        sums = np.zeros((len(grid), n_groups))
        have = np.zeros((len(grid), n_groups), dtype=bool)
        for gi, t in enumerate(grid):
            lo = float(t) - query.window_s
            i0 = int(np.searchsorted(times, lo, side="left"))
            i1 = int(np.searchsorted(times, float(t), side="right"))
            if i1 <= i0:
                continue
            block = table.mat[i0:i1][:, sel.cols]
            if query.form == "rate":
                vals = extrapolated_rate(times[i0:i1], block, lo, float(t), query.window_s)
            else:
                vals = _resets(block)
            ok = ~np.isnan(vals)
            if not ok.any():
                continue
            np.add.at(sums[gi], sel.group_of[ok], vals[ok])
            have[gi, sel.group_of[ok]] = True
        out: list[SeriesResult] = []
        for g, labels in enumerate(sel.group_labels):
            mask = have[:, g]
            if mask.any():
                out.append(SeriesResult(labels, grid[mask], sums[mask, g]))
        return out

    def _newest(
        self, table: _Table, query: Query, grid: npt.NDArray[np.float64]
    ) -> list[SeriesResult]:
        sel = table.select(query.matchers, ())
        times = table.times[: table.rows]
        ts: list[float] = []
        vs: list[float] = []
        for t in grid:
            i0 = int(np.searchsorted(times, float(t) - LOOKBACK_DELTA_S, side="left"))
            i1 = int(np.searchsorted(times, float(t), side="right"))
            for i in range(i1 - 1, i0 - 1, -1):
                if (~np.isnan(table.mat[i, sel.cols])).any():
                    ts.append(float(t))
                    vs.append(float(times[i]))
                    break
        if not ts:
            return []
        return [SeriesResult({}, np.array(ts), np.array(vs))]
