"""A proxyless gRPC client, run as its own process (grpcio's xDS client is process-wide, and
reads GRPC_XDS_BOOTSTRAP once): dials `xds:///SERVICE` and calls it N times.

    python grpc_xds_client.py TARGET METHOD N   ->  prints {"answers": {reply: count}, ...}
"""

from __future__ import annotations

import collections
import json
import sys
import time

import grpc


def main() -> None:
    target, method, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    started = time.monotonic()
    answers: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        first = call(b"", timeout=20, wait_for_ready=True)
        ready = time.monotonic() - started
        answers[first.decode()] += 1
        for _ in range(n - 1):
            answers[call(b"", timeout=10).decode()] += 1
    print(json.dumps({"answers": dict(answers), "ready_s": round(ready, 3)}))


if __name__ == "__main__":
    main()
