"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it.

Every `retry_s` each replica reads the Lease. The holder renews it (`renewTime`); another replica
takes it over only when it has seen the same holder and renewTime for longer than
`leaseDurationSeconds` by its OWN clock (no trust in other machines' clocks). Writes carry the
resourceVersion read, so two replicas racing for an expired Lease cannot both win. A leader that
cannot renew for `renew_deadline_s` steps down before anyone else may take over. On a clean stop
the leader releases the Lease (empty holder), so a successor takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slate.logs import kv
from slate.operator.metrics import OperatorMetrics

log = logging.getLogger("slate.operator.leader")


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class LeaderElector:
    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str = "slate-operator",
        identity: str | None = None,
        lease_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_s: float = 2.0,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        from kubernetes import client

        self.coord = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_s = lease_s
        self.renew_deadline_s = min(renew_deadline_s, lease_s)
        self.retry_s = retry_s
        self.metrics = metrics
        self.is_leader = False
        self._observed: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    async def run(
        self,
        on_start: Callable[[], Awaitable[None]],
        on_stop: Callable[[], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        """Campaign until `stop`; call on_start when elected, on_stop when no longer leader."""
        try:
            while not stop.is_set():
                try:
                    leading = await asyncio.to_thread(self._try)
                except Exception as e:
                    log.warning("%s", kv("lease_error", error=f"{type(e).__name__}: {e}"[:300]))
                    leading = self.is_leader and (
                        time.monotonic() - self._renewed_at < self.renew_deadline_s
                    )
                if leading and not self.is_leader:
                    self.is_leader = True
                    self._set_metric(1)
                    if self.metrics is not None:
                        self.metrics.leader_transitions.inc()
                    log.warning("%s", kv("became_leader", identity=self.identity))
                    await on_start()
                elif not leading and self.is_leader:
                    self.is_leader = False
                    self._set_metric(0)
                    log.warning("%s", kv("lost_leadership", identity=self.identity))
                    await on_stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry_s)
        finally:
            if self.is_leader:
                self.is_leader = False
                self._set_metric(0)
                await on_stop()
                try:
                    await asyncio.to_thread(self._release)
                except Exception as e:
                    log.warning("%s", kv("lease_release_failed", error=str(e)[:200]))

    def _set_metric(self, v: int) -> None:
        if self.metrics is not None:
            self.metrics.leader.set(v)

    def _try(self) -> bool:
        """One read-modify-write of the Lease; True if this replica holds it afterwards."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        now = datetime.now(UTC)
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
        except ApiException as e:
            if e.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=int(self.lease_s),
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            try:
                self.coord.create_namespaced_lease(self.namespace, body, _request_timeout=5)
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
            self._renewed_at = time.monotonic()
            return True
        spec = lease.spec
        if spec is None:
            spec = lease.spec = client.V1LeaseSpec()
        holder = spec.holder_identity
        renew = spec.renew_time.isoformat() if spec.renew_time else None
        record = (holder, renew)
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        duration = spec.lease_duration_seconds or int(self.lease_s)
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.lease_s)
        try:
            self.coord.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=5
            )
        except ApiException as e:
            if e.status == 409:  # someone else wrote first
                return False
            raise
        self._renewed_at = time.monotonic()
        self._observed = (self.identity, now.isoformat())
        self._observed_at = time.monotonic()
        return True

    def _release(self) -> None:
        lease = self.coord.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        self.coord.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
