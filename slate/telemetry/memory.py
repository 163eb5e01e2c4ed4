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
import scipy.sparse as sp

from slate.telemetry.queries import Matcher, Query, SeriesResult

LabelKey = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name (without `__name__`)."""

LOOKBACK_DELTA_S = 300.0

Vec = npt.NDArray[np.float64]
BoolVec = npt.NDArray[np.bool_]


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
    last_keys: tuple[Sequence[LabelKey], int] | None = None
    last_cols: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    selections: dict[tuple[tuple[Matcher, ...], tuple[str, ...]], _Selection] = field(
        default_factory=dict
    )
    results: dict[tuple[object, ...], dict[int, tuple[Vec, BoolVec]]] = field(default_factory=dict)
    """Answers per query and evaluation time (ms): group sums and presence."""
    max_cached_ms: int = -(2**62)

    def columns(self, keys: Sequence[LabelKey]) -> npt.NDArray[np.intp]:
        # Fast path: the same list object as last time, only grown by appending (the simulator
        # passes its own series list every scrape): look up the new tail only.
        last = self.last_keys
        start = 0
        prev = self.last_cols
        if last is not None and last[0] is keys and len(keys) >= last[1]:
            start = last[1]
            if start == len(keys):
                return prev
        cols = np.empty(len(keys), dtype=np.intp)
        cols[:start] = prev[:start]
        for i in range(start, len(keys)):
            k = keys[i]
            j = self.index.get(k)
            if j is None:
                j = len(self.labels)
                self.index[k] = j
                self.labels.append(dict(k))
            cols[i] = j
        self.last_keys = (keys, len(keys))
        self.last_cols = cols
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
        self.forget_from(round(t * 1000))

    def prune(self, before: float) -> None:
        keep_from = int(np.searchsorted(self.times[: self.rows], before, side="left"))
        if keep_from < max(64, self.rows // 2):
            return
        n = self.rows - keep_from
        self.mat[:n] = self.mat[keep_from : self.rows]
        self.mat[n : self.rows] = np.nan
        self.times[:n] = self.times[keep_from : self.rows]
        self.rows = n
        self.forget_before(round(before * 1000))

    def select(self, matchers: tuple[Matcher, ...], by: tuple[str, ...]) -> _Selection:
        """The series a selector matches and their `sum by` groups. Kept per selector and
        extended as series appear, so group numbers are stable (cached rows stay valid)."""
        sel = self.selections.get((matchers, by))
        if sel is None:
            sel = self.selections[(matchers, by)] = _Selection()
        if sel.scanned == len(self.labels):
            return sel
        for j in range(sel.scanned, len(self.labels)):
            labels = self.labels[j]
            if all(_matches(m, labels.get(m.label, "")) for m in matchers):
                g = tuple(labels.get(b, "") for b in by)
                gi = sel.groups.get(g)
                if gi is None:
                    gi = sel.groups[g] = len(sel.group_labels)
                    sel.group_labels.append({b: v for b, v in zip(by, g, strict=True) if v != ""})
                sel.col_list.append(j)
                sel.group_of.append(gi)
        sel.scanned = len(self.labels)
        n = len(sel.col_list)
        sel.cols = np.array(sel.col_list, dtype=np.intp)
        sel.onehot = sp.csr_matrix(
            (np.ones(n), (np.arange(n), np.array(sel.group_of, dtype=np.intp))),
            shape=(n, len(sel.group_labels)),
        )
        return sel

    def forget_from(self, t_ms: int) -> None:
        """Drop cached answers at or after `t_ms` (new samples there change them)."""
        if t_ms > self.max_cached_ms:
            return
        for cache in self.results.values():
            for k in [k for k in cache if k >= t_ms]:
                del cache[k]
        self.max_cached_ms = t_ms - 1

    def forget_before(self, t_ms: int) -> None:
        for cache in self.results.values():
            for k in [k for k in cache if k < t_ms]:
                del cache[k]


@dataclass
class _Selection:
    scanned: int = 0
    col_list: list[int] = field(default_factory=list)
    group_of: list[int] = field(default_factory=list)
    groups: dict[tuple[str, ...], int] = field(default_factory=dict)
    group_labels: list[dict[str, str]] = field(default_factory=list)
    cols: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    onehot: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0)))
    """selected series x groups"""


def _matches(m: Matcher, value: str) -> bool:
    import re

    if m.op == "=":
        return value == m.value
    if m.op == "!=":
        return value != m.value
    hit = re.fullmatch(m.value, value) is not None
    return hit if m.op == "=~" else not hit


def _windows(
    block: npt.NDArray[np.float64],
) -> tuple[
    npt.NDArray[np.bool_], npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]
]:
    """For windows x samples x series: present mask, first/last present sample index, and the
    values forward-filled over gaps (so drops between present samples are consecutive)."""
    k = block.shape[1]
    present = ~np.isnan(block)
    rows = np.arange(k)[None, :, None]
    first_i = np.where(present, rows, k).min(axis=1)
    last_i = np.where(present, rows, -1).max(axis=1)
    idx = np.where(present, rows, 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(np.where(present, block, 0.0), idx, axis=1)
    return present, first_i, last_i, filled


def extrapolated_rate(
    times: npt.NDArray[np.float64],
    block: npt.NDArray[np.float64],
    range_start: npt.NDArray[np.float64] | float,
    range_end: npt.NDArray[np.float64] | float,
    window_s: float,
) -> npt.NDArray[np.float64]:
    """Prometheus's `rate()` of each series over each window.

    `block`: windows x samples x series (NaN = absent; a 2-D samples x series block is one window),
    `times`: windows x samples; the ranges are [range_start, range_end] per window. NaN where a
    series has fewer than two samples in a window."""
    one = block.ndim == 2
    if one:
        block, times = block[None], np.asarray(times)[None]
    g, k, s = block.shape
    out = np.full((g, s), np.nan)
    if k < 2 or s == 0:
        return out[0] if one else out
    present, first_i, last_i, filled = _windows(block)
    n = present.sum(axis=1)
    ok = n >= 2
    rows = np.arange(k)[None, :, None]
    drop = (filled[:, 1:] < filled[:, :-1]) & present[:, 1:] & (rows[:, 1:] > first_i[:, None, :])
    resets = np.where(drop, filled[:, :-1], 0.0).sum(axis=1)
    fi = np.minimum(first_i, k - 1)
    li = np.maximum(last_i, 0)
    first_v = np.take_along_axis(block, fi[:, None, :], axis=1)[:, 0, :]
    last_v = np.take_along_axis(block, li[:, None, :], axis=1)[:, 0, :]
    first_t = np.take_along_axis(times, fi, axis=1)
    last_t = np.take_along_axis(times, li, axis=1)
    rs = np.broadcast_to(np.asarray(range_start, dtype=float).reshape(-1, 1), (g, 1))
    re_ = np.broadcast_to(np.asarray(range_end, dtype=float).reshape(-1, 1), (g, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = last_v - first_v + resets
        sampled = last_t - first_t
        avg = sampled / np.maximum(n - 1, 1)
        to_start = first_t - rs
        to_end = re_ - last_t
        pos = delta > 0
        to_zero = np.where(
            pos & (first_v >= 0), sampled * (first_v / np.where(pos, delta, 1)), np.inf
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
    return out[0] if one else out


def _resets(block: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """`resets()` of windows x samples x series: drops between consecutive present samples."""
    g, k, s = block.shape
    if k == 0:
        return np.full((g, s), np.nan)
    present, first_i, _, filled = _windows(block)
    rows = np.arange(k)[None, :, None]
    drop = (filled[:, 1:] < filled[:, :-1]) & present[:, 1:] & (rows[:, 1:] > first_i[:, None, :])
    out = drop.sum(axis=1).astype(float)
    out[~present.any(axis=1)] = np.nan
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
        `keys[i]` (sorted label pairs, see `label_key`). Series not listed are absent at `t`.
        Passing the same list object again is fast, provided it only grew by appending."""
        table = self._tables.setdefault(metric, _Table())
        cols = table.columns(keys)
        table.add_row(round(t, 3), cols, np.asarray(values, dtype=float))
        table.prune(t - self.retention_s)

    def forget_answers(self) -> None:
        """Drop every cached query answer (they are recomputed from the samples on demand)."""
        for table in self._tables.values():
            table.results.clear()
            table.max_cached_ms = -(2**62)

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
        if query.form == "newest":
            return self._newest(table, query, grid)
        sel = table.select(query.matchers, query.by)
        n_groups = len(sel.group_labels)
        if n_groups == 0:
            return []
        # Answers at times already evaluated are reused (a range query re-asked one interval
        # later shares all but its newest points); samples appended later invalidate them.
        cache = table.results.setdefault((query.form, query.matchers, query.by, query.window_s), {})
        ms = [round(float(t) * 1000) for t in grid]
        missing = [i for i, m in enumerate(ms) if m not in cache]
        if missing:
            sums, have = self._compute(table, sel, query, grid[missing])
            for r, i in enumerate(missing):
                cache[ms[i]] = (sums[r], have[r])
            table.max_cached_ms = max(table.max_cached_ms, max(ms[i] for i in missing))
        all_sums = np.zeros((len(grid), n_groups))
        all_have = np.zeros((len(grid), n_groups), dtype=bool)
        for i, m in enumerate(ms):
            row_sums, row_have = cache[m]
            all_sums[i, : len(row_sums)] = row_sums
            all_have[i, : len(row_have)] = row_have
        out: list[SeriesResult] = []
        for g, labels in enumerate(sel.group_labels):
            mask = all_have[:, g]
            if mask.any():
                out.append(SeriesResult(labels, grid[mask], all_sums[mask, g]))
        return out

    def _compute(
        self, table: _Table, sel: _Selection, query: Query, grid: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Group sums (grid x groups) and which groups have a value, computed from the samples."""
        n_groups = len(sel.group_labels)
        times = table.times[: table.rows]
        lo = grid - query.window_s
        i0 = np.searchsorted(times, lo, side="left")
        i1 = np.searchsorted(times, grid, side="right")
        span = np.maximum(i1 - i0, 0)
        kmax = int(span.max(initial=0))
        if kmax == 0 or len(sel.cols) == 0:
            return np.zeros((len(grid), n_groups)), np.zeros((len(grid), n_groups), dtype=bool)
        # every window's samples at once: windows x kmax x series, NaN-padded
        j = np.arange(kmax)[None, :]
        valid = j < span[:, None]
        rows = np.where(valid, i0[:, None] + j, 0)
        block = table.mat[rows][:, :, sel.cols]
        block[~valid] = np.nan
        wtimes = np.where(valid, times[rows], np.nan)
        if query.form == "rate":
            vals = extrapolated_rate(wtimes, block, lo, grid, query.window_s)
        else:
            vals = _resets(block)
        present = ~np.isnan(vals)
        sums = np.asarray(np.where(present, vals, 0.0) @ sel.onehot, dtype=float)
        have = np.asarray(present.astype(float) @ sel.onehot, dtype=float) > 0
        return sums, have

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
