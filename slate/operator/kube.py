"""Kubernetes client plumbing: API clients from kubeconfigs, list+watch loops in threads, and the
status/event/DestinationRule writers the controller uses.

The official `kubernetes` client is synchronous; every call here runs in a worker thread and hands
results back to the event loop. A watch never dies silently: a failure is logged, counted and the
watch re-lists after a backoff (410 Gone re-lists at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from slate.logs import kv
from slate.operator.destinationrule import GROUP as DR_GROUP
from slate.operator.destinationrule import PLURAL as DR_PLURAL
from slate.operator.destinationrule import POLICY_LABEL
from slate.operator.destinationrule import VERSION as DR_VERSION

log = logging.getLogger("slate.operator.kube")

GROUP, VERSION, PLURAL = "slate.dev", "v1alpha1", "trafficpolicies"
WATCH_TIMEOUT_S = 30
BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


def api_client(
    kubeconfig: str | Path | None = None, config_dict: Mapping[str, Any] | None = None
) -> Any:
    """An ApiClient from a kubeconfig file, a kubeconfig document, or the in-cluster service
    account (in that order). The path is always explicit: the client's own default reads
    $KUBECONFIG at import time."""
    from kubernetes import client, config

    if config_dict is not None:
        return config.new_client_from_config_dict(dict(config_dict))  # type: ignore[no-untyped-call]
    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return client.ApiClient(cfg)


def to_dict(api: Any, obj: Any) -> dict[str, Any]:
    """A typed client model as the plain JSON-shaped dict the API serves."""
    if isinstance(obj, dict):
        return obj
    out: dict[str, Any] = api.sanitize_for_serialization(obj)
    return out


Emit = Callable[[str, list[dict[str, Any]]], None]
"""(type, objects): type SYNC carries the full list after a (re)list; ADDED/MODIFIED/DELETED one."""


class WatchThread:
    """List + watch one resource in a daemon thread; events go to `emit` on the event loop."""

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        kwargs: Mapping[str, Any],
        emit: Emit,
        loop: asyncio.AbstractEventLoop,
        api: Any,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.list_fn = list_fn
        self.kwargs = dict(kwargs)
        self.emit = emit
        self.loop = loop
        self.api = api
        self.on_error = on_error
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> WatchThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()

    def _send(self, kind: str, objs: list[dict[str, Any]]) -> None:
        if not self._stop.is_set():
            self.loop.call_soon_threadsafe(self.emit, kind, objs)

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        failures = 0
        while not self._stop.is_set():
            try:
                listed = self.list_fn(**self.kwargs, _request_timeout=30)
                listed = to_dict(self.api, listed)
                items = [to_dict(self.api, i) for i in listed.get("items") or []]
                rv = (listed.get("metadata") or {}).get("resourceVersion")
                self._send("SYNC", items)
                failures = 0
                while not self._stop.is_set():
                    self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                    gone = False
                    for ev in self._watch.stream(
                        self.list_fn,
                        **self.kwargs,
                        resource_version=rv,
                        timeout_seconds=WATCH_TIMEOUT_S,
                        _request_timeout=WATCH_TIMEOUT_S + 10,
                    ):
                        if self._stop.is_set():
                            break
                        kind = ev.get("type")
                        obj = ev.get("raw_object") or to_dict(self.api, ev.get("object"))
                        if kind == "ERROR":
                            gone = (obj or {}).get("code") == 410
                            break
                        if kind == "BOOKMARK":
                            rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                            continue
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        self._send(str(kind), [obj])
                    if gone:
                        break  # re-list
            except ApiException as e:
                if self._stop.is_set():
                    return
                failures += 1
                self._failed(f"HTTP {e.status}: {e.reason}", failures)
            except Exception as e:  # connection refused, timeouts, bad data: retry
                if self._stop.is_set():
                    return
                failures += 1
                self._failed(f"{type(e).__name__}: {str(e)[:200]}", failures)

    def _failed(self, why: str, failures: int) -> None:
        log.warning("%s", kv("watch_failed", watch=self.name, error=why, attempt=failures))
        if self.on_error is not None:
            self.loop.call_soon_threadsafe(self.on_error, why)
        self._stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])


class KubeStatusSink:
    """Writes TrafficPolicy status through the status subresource (JSON merge patch)."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",  # the client would pick JSON patch
            _request_timeout=15,
        )


class KubeRuleStore:
    """DestinationRules through the API (called from the loop's worker thread)."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)

    def apply(self, rule: Mapping[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        meta = rule["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            current: Any = self.custom.get_namespaced_custom_object(
                DR_GROUP, DR_VERSION, ns, DR_PLURAL, name, _request_timeout=15
            )
        except ApiException as e:
            if e.status != 404:
                raise
            self.custom.create_namespaced_custom_object(
                DR_GROUP, DR_VERSION, ns, DR_PLURAL, dict(rule), _request_timeout=15
            )
            return
        body = dict(rule)
        body["metadata"] = {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}
        self.custom.replace_namespaced_custom_object(
            DR_GROUP, DR_VERSION, ns, DR_PLURAL, name, body, _request_timeout=15
        )

    def delete_all(self, namespace: str, policy: str, keep: Sequence[str] = ()) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            listed: Any = self.custom.list_namespaced_custom_object(
                DR_GROUP,
                DR_VERSION,
                namespace,
                DR_PLURAL,
                label_selector=f"{POLICY_LABEL}={policy}",
                _request_timeout=15,
            )
        except ApiException as e:
            if e.status == 404:  # no Istio CRDs: nothing to delete
                return
            raise
        for item in listed.get("items") or []:
            name = item["metadata"]["name"]
            if name in keep:
                continue
            try:
                self.custom.delete_namespaced_custom_object(
                    DR_GROUP, DR_VERSION, namespace, DR_PLURAL, name, _request_timeout=15
                )
            except ApiException as e:
                if e.status != 404:
                    raise


def describe(e: BaseException) -> str:
    """One short line for an exception (an ApiException's status and the server's message, not
    its headers)."""
    status = getattr(e, "status", None)
    body = getattr(e, "body", None)
    if status is not None:
        message = ""
        if body:
            try:
                message = str(json.loads(body).get("message", ""))
            except (ValueError, AttributeError):
                message = str(body)
        return f"HTTP {status} {getattr(e, 'reason', '')}: {message}"[:500]
    return f"{type(e).__name__}: {e}"[:500]


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
