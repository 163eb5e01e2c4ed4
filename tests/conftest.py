"""Fixtures shared by every test directory (defined, and type-checked, where they live)."""

from prometheus_harness import prometheus_factory

__all__ = ["prometheus_factory"]
