"""The endpoint call graph: how many calls to each destination one request of an endpoint makes.

The source side of a call does not know which inbound endpoint caused it (closed-loop.md), so the
multiplicities are learned from how a station's outbound call rate to one destination moves with
its inbound rate per endpoint class: non-negative least squares (scipy's nnls) of the outbound
series on the inbound series, over the lookback, with the rows of every cluster of the service
stacked (the multiplicities are a property of the code, not of the cluster).

Two inbound series that move together (their ratio does not vary beyond noise across the rows)
cannot be told apart: any split of the calls between them fits equally well. Such endpoints are
grouped; the group gets one multiplicity (the calls are attributed in proportion to their rates)
and the estimate says it is not separable, instead of inventing a split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FArray = npt.NDArray[np.float64]

SAME_DIRECTION = 2e-3
"""1 - cosine between two inbound columns below which they count as moving together: their ratio
varies by less than ~6% over the rows, about what Poisson noise alone gives at tens of rps."""
MIN_PER_REQUEST = 1e-3
"""Multiplicities below this are noise: reported as no call."""


@dataclass(frozen=True)
class CallEstimate:
    """Calls to `to` per request of the inbound endpoint `frm`."""

    frm: str
    to: str
    per_request: float
    confidence: float  # in [0, 1]: fit quality x separability x amount of data
    separable: bool  # False: `frm` was grouped with endpoints whose rates move together


def _groups(x: FArray) -> list[list[int]]:
    """Columns of x grouped by direction (greedy: each column joins the first group whose leader
    points the same way)."""
    norms = np.linalg.norm(x, axis=0)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    groups: list[list[int]] = []
    for j in range(x.shape[1]):
        for g in groups:
            if norms[j] > 0 and 1.0 - float(unit[:, g[0]] @ unit[:, j]) < SAME_DIRECTION:
                g.append(j)
                break
        else:
            groups.append([j])
    return groups


def fit_calls(
    inbound: FArray,
    outbound: FArray,
    inbound_names: Sequence[str],
    outbound_names: Sequence[str],
) -> list[CallEstimate]:
    """Fit outbound[t, d] ~ sum_e m[e, d] * inbound[t, e] with m >= 0.

    `inbound` is (rows, E) requests per second per inbound endpoint, `outbound` (rows, D) calls per
    second per destination, rows stacked over time and over the clusters of one service. Returns
    one estimate per (inbound endpoint, destination) pair with a multiplicity of at least
    MIN_PER_REQUEST.
    """
    from scipy.optimize import nnls

    x = np.asarray(inbound, dtype=float)
    y = np.asarray(outbound, dtype=float)
    ok = np.all(np.isfinite(x), axis=1) & np.all(np.isfinite(y), axis=1)
    x, y = x[ok], y[ok]
    n_rows, n_e = x.shape
    if n_rows == 0 or n_e == 0:
        return []
    groups = _groups(x)
    xg = np.column_stack([x[:, g].sum(axis=1) for g in groups])
    # Enough rows to trust more than the levels: confidence grows to 1 at 3 rows per column.
    data = min(1.0, n_rows / (3.0 * len(groups)))
    out: list[CallEstimate] = []
    for d, name in enumerate(outbound_names):
        coef, _res = nnls(xg, y[:, d])
        pred = xg @ coef
        ss = float(np.sum((y[:, d] - y[:, d].mean()) ** 2))
        err = float(np.sum((y[:, d] - pred) ** 2))
        level = float(np.sum(y[:, d] ** 2))
        # Fit quality: against the variation when there is some, else against the level.
        quality = 1.0 - err / ss if ss > 1e-9 * max(level, 1e-12) else 1.0 - err / max(level, 1e-12)
        quality = min(1.0, max(0.0, quality)) if math.isfinite(quality) else 0.0
        for gi, g in enumerate(groups):
            m = float(coef[gi])
            if m < MIN_PER_REQUEST:
                continue
            separable = len(g) == 1
            conf = quality * data * (1.0 if separable else 0.5)
            for j in g:
                out.append(CallEstimate(inbound_names[j], name, m, round(conf, 4), separable))
    return out


def drop_cycles(edges: Sequence[CallEstimate]) -> list[CallEstimate]:
    """Keep the call graph a DAG: drop the least sure edge of every cycle (a noise fit can add a
    small edge back up the graph)."""
    kept = sorted(edges, key=lambda e: (-e.confidence, -e.per_request, e.frm, e.to))
    out: list[CallEstimate] = []
    succ: dict[str, set[str]] = {}

    def reaches(a: str, b: str) -> bool:
        stack, seen = [a], {a}
        while stack:
            n = stack.pop()
            if n == b:
                return True
            for m in succ.get(n, ()):
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        return False

    for e in kept:
        if e.frm == e.to or reaches(e.to, e.frm):
            continue
        succ.setdefault(e.frm, set()).add(e.to)
        out.append(e)
    return sorted(out, key=lambda e: (e.frm, e.to))
