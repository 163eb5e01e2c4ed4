"""Stream protocol state without gRPC: subscriptions, nonces, ACK/NACK, no re-sending of rejects."""

from __future__ import annotations

import grpc
import pytest
from xds_testlib import (
    WEST,
    cla_weights,
    delta,
    endpoints,
    node,
    parse_delta,
    parse_sotw,
    sotw,
    split_routing,
)

from slate.xds.cache import XdsCache
from slate.xds.endpoints import EndpointSet
from slate.xds.protocol import ADS, EDS, DeltaStream, NackRecord, ProtocolError, SotwStream
from slate.xds.views import ViewKey, plain_envoy_view

EPS = endpoints({"cart": {"us-west": 2, "us-east": 1}, "ads": {"us-west": 1}})


def cache() -> XdsCache:
    return XdsCache(split_routing({"us-west": 0.8, "us-east": 0.2}, {"us-east": 1.0}), EPS)


def new_sotw(c: XdsCache, api: str = ADS) -> tuple[SotwStream, list[NackRecord]]:
    nacks: list[NackRecord] = []
    return SotwStream(c, plain_envoy_view, api=api, on_nack=nacks.append), nacks


def new_delta(c: XdsCache) -> tuple[DeltaStream, list[NackRecord]]:
    nacks: list[NackRecord] = []
    return DeltaStream(c, plain_envoy_view, api=ADS, on_nack=nacks.append), nacks


def reweight(c: XdsCache, west_share: float) -> None:
    c.set_routing(
        split_routing({"us-west": west_share, "us-east": 1 - west_share}, {"us-east": 1.0})
    )


# ---- refusing streams ---------------------------------------------------------------------------


def test_first_request_must_carry_a_usable_node() -> None:
    s, _ = new_sotw(cache())
    with pytest.raises(ProtocolError) as err:
        s.on_request(sotw(["cart"]))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    s, _ = new_sotw(cache())
    with pytest.raises(ProtocolError, match=r"node\.locality\.region"):
        s.on_request(sotw(["cart"], with_node=node(region="")))
    s, _ = new_sotw(cache())
    with pytest.raises(ProtocolError, match=r"node\.cluster"):
        s.on_request(sotw(["cart"], with_node=node(service="")))


def test_only_cluster_load_assignments_are_served() -> None:
    s, _ = new_sotw(cache())
    lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
    with pytest.raises(ProtocolError) as err:
        s.on_request(sotw([], with_node=node(), type_url=lds))
    assert err.value.code == grpc.StatusCode.UNIMPLEMENTED
    # Plain EDS may leave the type implied.
    e, _ = new_sotw(cache(), api=EDS)
    e.on_request(sotw(["cart"], with_node=node(), type_url=""))
    assert e.next_response() is not None
    a, _ = new_sotw(cache(), api=ADS)
    with pytest.raises(ProtocolError):
        a.on_request(sotw(["cart"], with_node=node(), type_url=""))


# ---- state of the world -------------------------------------------------------------------------


def test_sotw_subscribe_ack_push_and_nack_without_resend() -> None:
    c = cache()
    s, nacks = new_sotw(c)
    s.on_request(sotw(["cart"], with_node=node()))
    out = s.next_response()
    assert out is not None and out.started is None  # answers a subscription, not an update
    resp, clas = parse_sotw(out.payload)
    assert resp.nonce == out.nonce and set(clas) == {"cart"}
    assert cla_weights(clas["cart"]) == {"us-west": (0, 8000), "us-east": (0, 2000)}
    assert s.next_response() is None  # nothing more to say

    s.on_request(sotw(["cart"], nonce=out.nonce, version=resp.version_info))  # ACK
    assert s.acked == {"cart": out.versions["cart"]} and s.outstanding == 0

    reweight(c, 0.5)  # update -> push
    out2 = s.next_response()
    assert out2 is not None and out2.started is not None and out2.nonce != out.nonce
    _, clas = parse_sotw(out2.payload)
    assert cla_weights(clas["cart"])["us-west"] == (0, 5000)

    s.on_request(sotw(["cart"], nonce=out2.nonce, version=resp.version_info, error="bad"))  # NACK
    assert s.nacked == {"cart": out2.versions["cart"]}
    assert s.acked == {"cart": out.versions["cart"]}  # the proxy keeps what it accepted
    assert len(nacks) == 1 and nacks[0].versions == out2.versions and nacks[0].view == str(WEST)
    assert s.next_response() is None  # the rejected version is not sent again

    c.set_endpoints(c.endpoints)  # an update that does not change the content
    assert s.next_response() is None
    reweight(c, 0.5)
    assert s.next_response() is None
    # Dropping and re-adding the cluster does not bring the rejected version back either.
    s.on_request(sotw([], nonce=out2.nonce))
    s.on_request(sotw(["cart"], nonce=out2.nonce))
    assert s.next_response() is None

    reweight(c, 0.4)  # new content: sent
    out3 = s.next_response()
    assert out3 is not None
    assert cla_weights(parse_sotw(out3.payload)[1]["cart"])["us-west"] == (0, 4000)
    s.on_request(sotw(["cart"], nonce=out3.nonce))
    assert s.nacked == {} and s.acked == {"cart": out3.versions["cart"]}


def test_sotw_response_carries_only_what_changed_and_skips_rejected() -> None:
    c = cache()
    s, _ = new_sotw(c)
    s.on_request(sotw(["cart", "ads"], with_node=node()))
    out = s.next_response()
    assert out is not None and set(out.versions) == {"ads", "cart"}
    s.on_request(sotw(["cart", "ads"], nonce=out.nonce))
    reweight(c, 0.3)
    out = s.next_response()
    assert out is not None and set(out.versions) == {"cart"}
    s.on_request(sotw(["cart", "ads"], nonce=out.nonce, error="rejected"))
    # `ads` changes; `cart` stays at its rejected version and is not included again.
    eps = dict(c.endpoints.services)
    eps["ads"] = endpoints({"ads": {"us-west": 3}}).services["ads"]
    c.set_endpoints(EndpointSet(eps))
    out = s.next_response()
    assert out is not None and set(out.versions) == {"ads"}


def test_sotw_stale_nonce_request_is_ignored() -> None:
    c = cache()
    s, nacks = new_sotw(c)
    s.on_request(sotw(["cart"], with_node=node()))
    first = s.next_response()
    assert first is not None
    reweight(c, 0.1)
    second = s.next_response()
    assert second is not None
    # A NACK naming an older response, with a new subscription: ignored altogether.
    s.on_request(sotw(["cart", "ads"], nonce=first.nonce, error="old"))
    assert nacks == [] and s.nacked == {} and s.explicit == {"cart"}
    assert s.next_response() is None
    # The same request on the latest nonce counts.
    s.on_request(sotw(["cart", "ads"], nonce=second.nonce))
    out = s.next_response()
    assert out is not None and set(out.versions) == {"ads"}
    s.on_request(sotw(["cart", "ads"], nonce=out.nonce))
    assert s.outstanding == 0


def test_sotw_unsubscribe_resubscribe_and_absent_resources() -> None:
    c = cache()
    s, _ = new_sotw(c)
    s.on_request(sotw(["cart", "nosuch"], with_node=node()))
    out = s.next_response()
    assert out is not None
    _, clas = parse_sotw(out.payload)
    # A name that never existed is not answered in SotW EDS (the client's does-not-exist timer
    # covers it), so nothing is built or kept per unknown name.
    assert set(clas) == {"cart"}
    assert s.unknown == {"nosuch"} and c.resource(WEST, "nosuch") is None
    s.on_request(sotw(["nosuch"], nonce=out.nonce))  # drop cart
    reweight(c, 0.2)
    assert s.next_response() is None  # no longer watching cart
    s.on_request(sotw(["nosuch", "cart"], nonce=out.nonce))
    again = s.next_response()
    assert again is not None and set(again.versions) == {"cart"}
    # The service disappears from the endpoints: SotW sends an empty CLA for it.
    c.set_endpoints(endpoints({"ads": {"us-west": 1}}))
    gone = s.next_response()
    assert gone is not None
    assert len(parse_sotw(gone.payload)[1]["cart"].endpoints) == 0
    # The unknown name's service appears: the stream gets it.
    c.set_endpoints(endpoints({"ads": {"us-west": 1}, "nosuch": {"us-west": 1}}))
    born = s.next_response()
    assert born is not None and set(parse_sotw(born.payload)[1]) == {"nosuch"}
    assert s.unknown == set()


def test_sotw_legacy_and_explicit_wildcard() -> None:
    s, _ = new_sotw(cache())
    s.on_request(sotw([], with_node=node()))  # empty first request = wildcard
    out = s.next_response()
    assert out is not None and set(out.versions) == {"ads", "cart"}
    s.on_request(sotw(["cart"], nonce=out.nonce))  # names end the legacy wildcard
    assert not s.wildcard and s.explicit == {"cart"}
    s2, _ = new_sotw(cache())
    s2.on_request(sotw(["*"], with_node=node()))
    assert s2.wildcard


# ---- delta -------------------------------------------------------------------------------------


def test_delta_subscribe_push_nack_and_unsubscribe() -> None:
    c = cache()
    s, nacks = new_delta(c)
    s.on_request(delta(["cart"], with_node=node()))
    out = s.next_response()
    assert out is not None
    resp, res = parse_delta(out.payload)
    assert resp.nonce == out.nonce and set(res) == {"cart"}
    assert res["cart"][0] == out.versions["cart"]
    s.on_request(delta(nonce=out.nonce))
    assert s.acked == out.versions

    reweight(c, 0.6)
    out = s.next_response()
    assert out is not None
    s.on_request(delta(nonce=out.nonce, error="no"))
    assert len(nacks) == 1 and s.next_response() is None
    reweight(c, 0.6)
    assert s.next_response() is None

    s.on_request(delta(unsubscribe=["cart"]))
    reweight(c, 0.7)
    assert s.next_response() is None


def test_delta_removal_and_nonexistent_names() -> None:
    c = cache()
    s, _ = new_delta(c)
    s.on_request(delta(["cart", "nosuch"], with_node=node()))
    out = s.next_response()
    assert out is not None
    resp, res = parse_delta(out.payload)
    assert set(res) == {"cart"} and list(resp.removed_resources) == ["nosuch"]
    s.on_request(delta(nonce=out.nonce))
    c.set_endpoints(endpoints({"ads": {"us-west": 1}, "nosuch": {"us-east": 1}}))
    out = s.next_response()
    assert out is not None
    resp, res = parse_delta(out.payload)
    assert set(res) == {"nosuch"} and list(resp.removed_resources) == ["cart"]


def test_delta_reconnect_with_current_versions_gets_nothing_new() -> None:
    c = cache()
    first, _ = new_delta(c)
    first.on_request(delta(["cart"], with_node=node()))
    out = first.next_response()
    assert out is not None
    have = out.versions
    # A new stream (say, after a server restart) told which versions the client has.
    again, _ = new_delta(cache())
    again.on_request(delta(["cart"], with_node=node(), initial=have))
    assert again.next_response() is None
    stale, _ = new_delta(cache())
    stale.on_request(delta(["cart"], with_node=node(), initial={"cart": "old"}))
    out = stale.next_response()
    assert out is not None and out.versions == have


def test_delta_resubscribe_asks_again_and_wildcard() -> None:
    c = cache()
    s, _ = new_delta(c)
    s.on_request(delta(["cart"], with_node=node()))
    out = s.next_response()
    assert out is not None
    s.on_request(delta(["cart"], nonce=out.nonce))
    again = s.next_response()
    assert again is not None and again.versions == out.versions

    w, _ = new_delta(c)
    w.on_request(delta(with_node=node()))  # legacy wildcard
    out = w.next_response()
    assert out is not None and set(out.versions) == {"ads", "cart"}
    w.on_request(delta(["cart"], nonce=out.nonce))  # still wildcard in delta
    assert w.wildcard
    w.on_request(delta(unsubscribe=["*"]))
    assert not w.wildcard and w.explicit == {"cart"}


def test_node_mapper_is_pluggable() -> None:
    """The seam for Istio: a mapper reading node metadata instead of node.cluster."""

    def from_metadata(n: object) -> ViewKey:
        fields = n.metadata.fields  # type: ignore[attr-defined]
        return ViewKey(fields["APP"].string_value, fields["CLUSTER_ID"].string_value)

    c = cache()
    s = SotwStream(c, from_metadata, api=ADS)
    n = node(service="frontend.default", region="")
    n.metadata.update({"APP": "frontend", "CLUSTER_ID": "us-west"})
    s.on_request(sotw(["cart"], with_node=n))
    assert s.view == WEST
    out = s.next_response()
    assert out is not None
    assert cla_weights(parse_sotw(out.payload)[1]["cart"])["us-west"] == (0, 8000)
