"""Route keys moved to the model (slate/model/keys.py): import RouteKey and route_keys from there.

This module re-exports them (the same objects) for code written against the old place.
"""

from slate.model.keys import RouteKey, route_keys

__all__ = ["RouteKey", "route_keys"]
