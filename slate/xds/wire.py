"""Discovery responses assembled from pre-serialised pieces.

A protobuf message is the concatenation of its encoded fields, and a repeated message field is the
concatenation of its elements. So a `DiscoveryResponse` can be built by joining bytes: each
resource's `Any` (or delta `Resource`) is serialised once when the cache builds it, a response body
(everything but the nonce) is joined once per distinct content and shared by every stream that
needs the same content, and each stream appends only its own nonce field (field 5 in both
`DiscoveryResponse` and `DeltaDiscoveryResponse`). The result parses as the ordinary message.
"""

from __future__ import annotations

from collections.abc import Iterable

# Field numbers from envoy/service/discovery/v3/discovery.proto.
_ANY_TYPE_URL, _ANY_VALUE = 1, 2
_SOTW_VERSION_INFO, _SOTW_RESOURCES, _SOTW_TYPE_URL = 1, 2, 4
_DELTA_SYSTEM_VERSION, _DELTA_RESOURCES, _DELTA_TYPE_URL, _DELTA_REMOVED = 1, 2, 4, 6
_RESOURCE_VERSION, _RESOURCE_BODY, _RESOURCE_NAME = 1, 2, 3
_NONCE = 5

_LEN = 2  # wire type of length-delimited fields


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (string, bytes or embedded message)."""
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    """One varint field (proto3: omitted when 0, as protobuf does)."""
    return _varint(number << 3) + _varint(value) if value else b""


def _string(number: int, text: str) -> bytes:
    return field(number, text.encode()) if text else b""


def any_message(type_url: str, value: bytes) -> bytes:
    """A serialised `google.protobuf.Any`."""
    return _string(_ANY_TYPE_URL, type_url) + field(_ANY_VALUE, value)


def delta_resource(name: str, version: str, any_bytes: bytes) -> bytes:
    """A serialised `envoy.service.discovery.v3.Resource`."""
    return (
        _string(_RESOURCE_VERSION, version)
        + field(_RESOURCE_BODY, any_bytes)
        + _string(_RESOURCE_NAME, name)
    )


def sotw_body(version_info: str, type_url: str, resources: Iterable[bytes]) -> bytes:
    """A `DiscoveryResponse` without nonce; `resources` are serialised `Any`s."""
    parts = [_string(_SOTW_VERSION_INFO, version_info)]
    parts += [field(_SOTW_RESOURCES, r) for r in resources]
    parts.append(_string(_SOTW_TYPE_URL, type_url))
    return b"".join(parts)


def delta_body(
    type_url: str,
    resources: Iterable[bytes],
    removed: Iterable[str],
    system_version_info: str = "",
) -> bytes:
    """A `DeltaDiscoveryResponse` without nonce; `resources` are serialised `Resource`s."""
    parts = [_string(_DELTA_SYSTEM_VERSION, system_version_info)]
    parts += [field(_DELTA_RESOURCES, r) for r in resources]
    parts.append(_string(_DELTA_TYPE_URL, type_url))
    parts += [field(_DELTA_REMOVED, name.encode()) for name in removed]
    return b"".join(parts)


_NONCE_TAG = _varint(_NONCE << 3 | _LEN)


def with_nonce(body: bytes, nonce: str) -> bytes:
    """The body of either response type with its nonce field appended."""
    raw = nonce.encode()
    if 0 < len(raw) < 0x80:  # one-byte length: the per-stream fast path
        return b"".join((body, _NONCE_TAG, bytes((len(raw),)), raw))
    return body + _string(_NONCE, nonce)
