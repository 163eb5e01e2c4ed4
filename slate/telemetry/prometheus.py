"""A Prometheus over HTTP (prometheus-api-client) answering slate's query values.

Only transport lives here: the query is rendered to PromQL (`Query.promql`), sent as an instant
(`/api/v1/query`) or range (`/api/v1/query_range`) query, and Prometheus's `data.result` is turned
into `SeriesResult`s by `from_prometheus_json`; the Observer parses those exactly as it parses the
MemoryBackend's answers.

Errors: no connection, a timeout, or HTTP 5xx (Prometheus down, starting, overloaded) raise
`TelemetryUnavailable`; HTTP 4xx (Prometheus refused this query) raises `QueryFailed`, which the
Observer reports in `problems` and goes on.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from slate.telemetry.observation import TelemetryUnavailable
from slate.telemetry.observe import Observer
from slate.telemetry.queries import Query, QueryFailed, SeriesResult, from_prometheus_json

_STATUS = re.compile(r"HTTP Status Code (\d{3})")


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PrometheusBackend:
    """`url`: Prometheus's base URL (e.g. http://127.0.0.1:9090); `timeout_s` per request.
    Connection failures are retried `retries` times (with a short backoff) before giving up."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, retries: int = 1) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        retry = Retry(total=retries, backoff_factor=0.1, status_forcelist=(), allowed_methods=None)
        self._client = PrometheusConnect(
            url=self.url, disable_ssl=False, retry=retry, timeout=timeout_s
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> list[SeriesResult]:
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        try:
            result = fn(*args, **kwargs)
        except requests.exceptions.RequestException as e:
            raise TelemetryUnavailable(
                f"Prometheus at {self.url} unreachable: {type(e).__name__}: {_shorten(str(e))}"
            ) from e
        except PrometheusApiClientException as e:
            m = _STATUS.search(str(e))
            status = int(m.group(1)) if m else 0
            if 400 <= status < 500:
                raise QueryFailed(f"HTTP {status}: {_shorten(str(e))}") from e
            raise TelemetryUnavailable(
                f"Prometheus at {self.url} failed the {what} query: {_shorten(str(e))}"
            ) from e
        except ValueError as e:  # a body that is not Prometheus's JSON
            raise TelemetryUnavailable(f"Prometheus at {self.url}: bad answer: {e}") from e
        if not isinstance(result, list):
            raise TelemetryUnavailable(f"Prometheus at {self.url}: unexpected answer shape")
        try:
            return from_prometheus_json(result)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise TelemetryUnavailable(f"Prometheus at {self.url}: malformed result: {e}") from e

    def instant(self, query: Query, at: float) -> list[SeriesResult]:
        return self._call(
            "instant", self._client.custom_query, query.promql(), params={"time": f"{at:.3f}"}
        )

    def range(self, query: Query, start: float, end: float, step: float) -> list[SeriesResult]:
        # the client rounds datetimes to whole seconds: pass exact bounds as params (they win)
        params = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        return self._call(
            "range",
            self._client.custom_query_range,
            query.promql(),
            datetime.fromtimestamp(start),
            datetime.fromtimestamp(end),
            f"{step:g}",
            params=params,
        )


def prometheus_source(
    url: str, *, lookback_s: float = 1800.0, step_s: float = 30.0, timeout_s: float = 10.0
) -> Observer:
    """A TelemetrySource reading a real Prometheus: `prometheus_source(url).observe(policy)`."""
    return Observer(
        PrometheusBackend(url, timeout_s=timeout_s), lookback_s=lookback_s, step_s=step_s
    )
