"""Learning the mesh from telemetry: the endpoint call graph and each station's latency curve.

Everything here works on plain arrays (numpy), so it is tested on synthetic data with known answers
and knows nothing of Prometheus: slate/control turns an Observation into these arrays.
"""
