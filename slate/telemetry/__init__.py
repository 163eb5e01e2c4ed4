"""Telemetry: Istio's standard metrics (from Prometheus or the simulator's store) -> Observation."""
