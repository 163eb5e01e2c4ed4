"""The cache: one build per view, content versions, and notifying exactly the affected watchers."""

from __future__ import annotations

from collections.abc import Sequence

from xds_testlib import EAST, WEST, cla_weights, endpoints, routing, split_routing

from slate.xds.cache import XdsCache
from slate.xds.endpoints import EndpointSet
from slate.xds.metrics import XdsMetrics
from slate.xds.views import ViewKey


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def resources_changed(self, names: Sequence[str], started: float) -> None:
        self.calls.append(sorted(names))


EPS = endpoints({"cart": {"us-west": 2, "us-east": 2, "eu": 1}, "ads": {"us-west": 1}})


def make(west: dict[str, float] | None = None, east: dict[str, float] | None = None) -> XdsCache:
    return XdsCache(
        split_routing(
            west or {"us-west": 0.8, "us-east": 0.2}, east or {"us-west": 0.3, "us-east": 0.7}
        ),
        EPS,
    )


def test_views_get_their_own_weights_and_share_one_object() -> None:
    cache = make()
    west, east = cache.resource(WEST, "cart"), cache.resource(EAST, "cart")
    assert west is not None and east is not None
    assert cla_weights(west.message()) == {"us-west": (0, 8000), "us-east": (0, 2000), "eu": (1, 1)}
    assert cla_weights(east.message()) == {"us-west": (0, 3000), "us-east": (0, 7000), "eu": (1, 1)}
    assert cache.resource(WEST, "cart") is west  # built once per view
    assert west.version != east.version


def test_views_with_the_same_plan_share_one_resource() -> None:
    cache = make(west={"us-east": 1.0}, east={"us-east": 1.0})
    west, east = cache.resource(WEST, "cart"), cache.resource(EAST, "cart")
    assert west is not None and west is east
    other = cache.resource(ViewKey("checkout", "us-west"), "cart")  # unrouted: local cluster
    assert other is not None and other is not west


def test_versions_are_content_hashes_stable_across_caches() -> None:
    a, b = make(), make()
    ra, rb = a.resource(WEST, "cart"), b.resource(WEST, "cart")
    assert ra is not None and rb is not None
    assert ra.version == rb.version and ra.cla == rb.cla
    c = make(west={"us-west": 0.5, "us-east": 0.5})
    rc = c.resource(WEST, "cart")
    assert rc is not None and rc.version != ra.version


def test_update_notifies_only_watchers_of_changed_resources() -> None:
    cache = make()
    w_west, w_east, w_ads = Recorder(), Recorder(), Recorder()
    for w, view, name in ((w_west, WEST, "cart"), (w_east, EAST, "cart"), (w_ads, WEST, "ads")):
        cache.watch(w, view, [name])
        assert cache.resource(view, name) is not None
    before_east = cache.resource(EAST, "cart")

    # Only the west route changes.
    result = cache.set_routing(
        split_routing({"us-west": 0.6, "us-east": 0.4}, {"us-west": 0.3, "us-east": 0.7})
    )
    assert (result.changed, result.notified) == (1, 1)
    assert w_west.calls == [["cart"]] and w_east.calls == [] and w_ads.calls == []
    assert cache.resource(EAST, "cart") is before_east
    res = cache.resource(WEST, "cart")
    assert res is not None and res.generation == result.generation

    # The same routing again: nothing changes, nobody hears anything.
    result = cache.set_routing(cache.routing)
    assert (result.changed, result.notified) == (0, 0)

    # Endpoints of `ads` change: only its watcher hears.
    eps = dict(EPS.services)
    eps["ads"] = endpoints({"ads": {"us-west": 2}}).services["ads"]
    cache.set_endpoints(EndpointSet(eps))
    assert w_ads.calls == [["ads"]] and len(w_west.calls) == 1 and w_east.calls == []


def test_unwatched_resources_are_dropped_and_rebuilt_on_demand() -> None:
    cache = make()
    w = Recorder()
    cache.watch(w, WEST, ["cart"])
    old = cache.resource(WEST, "cart")
    cache.unwatch(w, WEST, ["cart"])
    cache.set_routing(split_routing({"us-east": 1.0}, {"us-east": 1.0}))
    assert w.calls == []
    new = cache.resource(WEST, "cart")
    assert new is not None and old is not None and new is not old
    assert cla_weights(new.message())["us-east"] == (0, 10_000)


def test_removed_service_becomes_absent_and_wildcard_hears_of_new_names() -> None:
    cache = make()
    w = Recorder()
    cache.watch_all(w, WEST)
    assert cache.names(WEST) == {"cart", "ads"}
    cache.watch(w, WEST, ["cart"])
    assert cache.resource(WEST, "cart") is not None
    cache.set_endpoints(endpoints({"ads": {"us-west": 1}, "shipping": {"us-east": 1}}))
    assert cache.resource(WEST, "cart") is None
    assert cache.names(WEST) == {"ads", "shipping"}
    assert w.calls == [["cart", "shipping"]]


def test_wildcard_names_include_routed_endpoint_classes() -> None:
    cache = XdsCache(routing(("frontend", "us-west", "cart.add", {"us-west": 1})), EPS)
    assert cache.names(WEST) == {"cart", "cart.add", "ads"}
    assert cache.names(ViewKey("other", "us-west")) == {"cart", "ads"}


def test_identical_content_shares_response_bytes() -> None:
    cache = make()
    res = cache.resource(WEST, "cart")
    assert res is not None
    body1, v1 = cache.sotw_body([res])
    body2, v2 = cache.sotw_body([res])
    assert body1 is body2 and v1 == v2
    assert cache.delta_body([res], []) is cache.delta_body([res], [])


def test_metrics_track_generation_and_resource_versions() -> None:
    metrics = XdsMetrics()
    cache = XdsCache(split_routing({"us-west": 1}, {"us-east": 1}), EPS, metrics=metrics)
    w = Recorder()
    cache.watch(w, WEST, ["cart"])
    cache.resource(WEST, "cart")
    cache.set_routing(split_routing({"us-east": 1}, {"us-east": 1}))
    get = metrics.registry.get_sample_value
    assert get("slate_xds_cache_generation") == cache.generation == 2
    labels = {"view": "frontend@us-west", "resource": "cart"}
    assert get("slate_xds_resource_generation", labels) == 2
    assert get("slate_xds_cache_updates_total") == 1
