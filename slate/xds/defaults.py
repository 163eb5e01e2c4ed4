"""Defaults of the xDS server's client limits, in a module light enough for `slate --help`
(the CLI's flag help reads them without loading grpc or protobuf)."""

MAX_NAMES = 10_000
"""Resource names per request and subscribed per stream [--max-names]."""
MAX_REQUEST_BYTES = 1 << 20
"""Serialised size of one request [--max-request-bytes]."""
MAX_CONNECTION_AGE_S = 1800.0
"""Seconds a proxy's connection lives before the server asks it to reconnect [--max-connection-age].
A reconnect is a new TLS handshake, so a replaced client CA, a rotated server certificate or a new
identity table reaches every stream within this time, not only new ones; 30 min, as istiod's
default (keepalive.MaxServerConnectionAge). 0: connections live as long as the proxy keeps them."""
MAX_CONNECTION_AGE_LIMIT_S = 7 * 86400.0
"""The largest --max-connection-age accepted (a week; gRPC takes milliseconds as a 32-bit int)."""
