"""The control loop: observe -> learn -> solve -> safety -> publish, every interval.

It knows nothing of Kubernetes (slate/operator wraps it); `slate run` drives it standalone.
"""
