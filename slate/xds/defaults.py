"""Defaults of the xDS server's client limits, in a module light enough for `slate --help`
(the CLI's flag help reads them without loading grpc or protobuf)."""

MAX_NAMES = 10_000
"""Resource names per request and subscribed per stream [--max-names]."""
MAX_REQUEST_BYTES = 1 << 20
"""Serialised size of one request [--max-request-bytes]."""
