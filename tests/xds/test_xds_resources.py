"""Routing + endpoints -> CLA: integer weights, unrouted and averaged cases, priorities."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slate.model.routing import routing_from_json
from slate.xds.endpoints import Endpoint, EndpointSet
from slate.xds.resources import (
    TLS_MATCH_KEY,
    ClaOptions,
    ClaWriter,
    RouteIndex,
    build_cla,
    destination_weights,
    integer_weights,
    locality_plan,
)
from slate.xds.views import ViewKey

FE_WEST = ViewKey("frontend", "us-west")


def eps(*clusters: str, per: int = 1) -> dict[str, tuple[Endpoint, ...]]:
    out = {}
    for i, c in enumerate(clusters):
        out[c] = tuple(Endpoint(f"10.0.{i}.{j + 1}", 8080) for j in range(per))
    return out


def index(*routes: tuple[str, str, str, dict[str, float]]) -> RouteIndex:
    return RouteIndex(
        routing_from_json(
            {
                "routes": [
                    {"from_service": s, "from_cluster": c, "to": to, "weights": w}
                    for s, c, to, w in routes
                ]
            }
        )
    )


# ---- integer weights ----------------------------------------------------------------------------


def test_integer_weights_largest_remainder() -> None:
    assert integer_weights({"a": 1, "b": 1, "c": 1}, 100) == {"a": 34, "b": 33, "c": 33}
    assert integer_weights({"a": 0.8, "b": 0.2}, 10_000) == {"a": 8000, "b": 2000}
    assert integer_weights({"a": 2, "b": 0}, 10) == {"a": 10}
    assert integer_weights({}, 10) == {}
    assert integer_weights({"a": 0.0}, 10) == {}


def test_integer_weights_tiny_positive_weight_still_gets_one() -> None:
    got = integer_weights({"a": 1.0, "b": 1e-9, "c": 1e-9}, 1000)
    assert got == {"a": 998, "b": 1, "c": 1}


def test_integer_weights_refuses_more_positives_than_total() -> None:
    with pytest.raises(ValueError):
        integer_weights({str(i): 1.0 for i in range(11)}, 10)


@given(
    st.dictionaries(
        st.text("abcdefgh", min_size=1, max_size=3),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        max_size=12,
    ),
    st.sampled_from([100, 1000, 10_000]),
)
def test_integer_weights_properties(weights: dict[str, float], total: int) -> None:
    got = integer_weights(weights, total)
    positive = {c for c, w in weights.items() if w > 0}
    assert set(got) == positive
    if not positive:
        return
    assert sum(got.values()) == total
    assert all(v >= 1 for v in got.values())
    s = sum(weights[c] for c in positive)
    exact = {c: weights[c] / s * total for c in positive}
    if all(x >= 1 for x in exact.values()):
        # Plain largest remainder: never more than one unit from the exact share.
        assert all(abs(got[c] - exact[c]) < 1 for c in positive), (got, exact)


# ---- which clusters, how much -------------------------------------------------------------------


def test_routed_weights_are_normalised() -> None:
    idx = index(("frontend", "us-west", "cart", {"us-west": 3, "us-east": 1}))
    e = EndpointSet({"cart": eps("us-west", "us-east")})
    assert destination_weights(idx, e, FE_WEST, "cart") == {"us-east": 0.25, "us-west": 0.75}


def test_endpoint_name_falls_back_to_service_route() -> None:
    idx = index(("frontend", "us-west", "cart", {"us-east": 1}))
    e = EndpointSet({"cart": eps("us-west", "us-east")})
    assert destination_weights(idx, e, FE_WEST, "cart.add") == {"us-east": 1.0}


def test_service_name_averages_its_endpoint_routes() -> None:
    idx = index(
        ("frontend", "us-west", "cart.add", {"us-west": 1.0}),
        ("frontend", "us-west", "cart.get", {"us-west": 0.5, "us-east": 0.5}),
        ("frontend", "us-east", "cart.get", {"us-east": 1.0}),  # another source: not averaged
    )
    e = EndpointSet({"cart": eps("us-west", "us-east")})
    assert destination_weights(idx, e, FE_WEST, "cart") == {"us-east": 0.25, "us-west": 0.75}
    # An endpoint class with its own route keeps it.
    assert destination_weights(idx, e, FE_WEST, "cart.get") == {"us-east": 0.5, "us-west": 0.5}


def test_unrouted_goes_to_own_cluster_when_it_has_endpoints() -> None:
    e = EndpointSet({"cart": eps("us-west", "us-east")})
    assert destination_weights(index(), e, FE_WEST, "cart.add") == {"us-west": 1.0}


def test_unrouted_without_local_endpoints_spreads_equally_or_by_rtt() -> None:
    e = EndpointSet({"cart": eps("us-east", "eu", "ap")})
    assert destination_weights(index(), e, FE_WEST, "cart") == {
        "ap": 1 / 3,
        "eu": 1 / 3,
        "us-east": 1 / 3,
    }
    near = EndpointSet(e.services, {("us-west", "us-east"): 60, ("eu", "us-west"): 140})
    assert destination_weights(index(), near, FE_WEST, "cart") == {"us-east": 1.0}
    tie = EndpointSet(e.services, {("us-west", "us-east"): 60, ("us-west", "eu"): 60})
    assert destination_weights(index(), tie, FE_WEST, "cart") == {"eu": 0.5, "us-east": 0.5}


def test_weights_on_clusters_without_endpoints_are_dropped() -> None:
    idx = index(("frontend", "us-west", "cart", {"us-west": 0.5, "us-east": 0.25, "eu": 0.25}))
    e = EndpointSet({"cart": {**eps("us-west", "us-east"), "eu": ()}})
    assert destination_weights(idx, e, FE_WEST, "cart") == {"us-east": 1 / 3, "us-west": 2 / 3}
    # All routed clusters empty: fall back to the nearest cluster with endpoints.
    idx2 = index(("frontend", "us-west", "cart", {"eu": 1.0}))
    assert destination_weights(idx2, e, FE_WEST, "cart") == {"us-west": 1.0}


def test_unknown_service_and_service_without_endpoints() -> None:
    e = EndpointSet({"cart": {"us-west": ()}})
    assert destination_weights(index(), e, FE_WEST, "nope") is None
    assert destination_weights(index(), e, FE_WEST, "cart") == {}


# ---- CLA ----------------------------------------------------------------------------------------


def test_cla_localities_priorities_and_weights() -> None:
    by_cluster = {**eps("us-west", "us-east", "eu", per=2), "ap": ()}
    plan = locality_plan({"us-west": 0.8, "us-east": 0.2}, by_cluster, 10_000)
    assert plan == (("us-east", 0, 2000), ("us-west", 0, 8000), ("eu", 1, 1))
    cla = build_cla("cart", plan, by_cluster, ClaOptions())
    assert cla.cluster_name == "cart"
    got = {
        loc.locality.region: (
            loc.priority,
            loc.load_balancing_weight.value,
            [
                (
                    e.endpoint.address.socket_address.address,
                    e.endpoint.address.socket_address.port_value,
                )
                for e in loc.lb_endpoints
            ],
        )
        for loc in cla.endpoints
    }
    assert got == {
        "us-east": (0, 2000, [("10.0.1.1", 8080), ("10.0.1.2", 8080)]),
        "us-west": (0, 8000, [("10.0.0.1", 8080), ("10.0.0.2", 8080)]),
        "eu": (1, 1, [("10.0.2.1", 8080), ("10.0.2.2", 8080)]),
    }
    assert not cla.endpoints[0].lb_endpoints[0].HasField("metadata")


def test_cla_istio_tls_metadata_is_optional() -> None:
    by_cluster = eps("us-west")
    plan = locality_plan({"us-west": 1.0}, by_cluster, 100)
    cla = build_cla("cart", plan, by_cluster, ClaOptions(istio_tls_metadata=True))
    md = cla.endpoints[0].lb_endpoints[0].metadata.filter_metadata[TLS_MATCH_KEY]
    assert md.fields["tlsMode"].string_value == "istio"


def test_cla_weight_total_is_respected() -> None:
    by_cluster = eps("a", "b", "c")
    plan = locality_plan({"a": 1, "b": 1, "c": 1}, by_cluster, 1000)
    assert sum(w for _, p, w in plan if p == 0) == 1000
    assert math.isclose(sum(w for _, _, w in plan), 1000)


@given(
    weights=st.lists(st.floats(0, 1), min_size=3, max_size=3),
    per=st.integers(0, 700),
    total=st.sampled_from([100, 10_000, 1_000_000]),
    istio=st.booleans(),
)
def test_cla_writer_matches_protobuf_byte_for_byte(
    weights: list[float], per: int, total: int, istio: bool
) -> None:
    # Versions are hashes of these bytes: the joined CLA must equal protobuf's own serialisation.
    # (700 endpoints make a locality longer than 16 KiB: multi-byte lengths.)
    by_cluster = {
        "us-west": tuple(Endpoint(f"10.0.{j // 250}.{j % 250 + 1}", 8080) for j in range(per)),
        "us-east": (Endpoint("fd00::7", 80), Endpoint("10.1.0.1", 65535)),
        "eu": (Endpoint("10.2.0.1", 1),),
        "ap": (),
    }
    plan = locality_plan(
        dict(zip(["us-west", "us-east", "eu"], weights, strict=True)), by_cluster, total
    )
    options = ClaOptions(istio_tls_metadata=istio)
    writer = ClaWriter(options)
    expected = build_cla("cart.ep1", plan, by_cluster, options).SerializeToString(
        deterministic=True
    )
    assert writer.cla("cart.ep1", plan, by_cluster) == expected
    assert writer.cla("cart.ep1", plan, by_cluster) == expected  # from the memo


def test_model_and_xds_agree_on_the_default_of_an_unrouted_key() -> None:
    """The evaluator and the baselines predict an unrouted key's split with the same rule the
    views serve: two clusters equally near share equally (no declared-order tie-break)."""
    from slate.model.keys import split_or_nearest
    from slate.model.topology import Topology

    clusters = ("us-west", "us-east", "eu")
    rtt = ((0.0, 60.0, 60.0), (60.0, 0.0, 80.0), (60.0, 80.0, 0.0))
    topology = Topology(clusters, rtt, tuple((0.0,) * 3 for _ in clusters))
    table = {("us-west", "us-east"): 60.0, ("us-west", "eu"): 60.0, ("us-east", "eu"): 80.0}
    served = destination_weights(
        index(), EndpointSet({"cart": eps("us-east", "eu")}, table), FE_WEST, "cart"
    )
    predicted = dict(split_or_nearest(topology, "us-west", ("us-east", "eu"), None))
    assert served == predicted == {"eu": 0.5, "us-east": 0.5}
