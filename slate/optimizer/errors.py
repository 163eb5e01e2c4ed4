"""What solve() raises: the caller keeps its last routing and says why."""

from __future__ import annotations


class SolveError(RuntimeError):
    """The LP solver failed (numerical trouble, time limit); the caller keeps its last routing."""


class InfeasibleError(SolveError):
    """The caller's work bounds or route constraints admit no routing; the message names which
    (the least it can tell: one station or key when a single one is impossible on its own)."""
