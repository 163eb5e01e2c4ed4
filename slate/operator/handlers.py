"""The Kopf handlers of the TrafficPolicy operator, registered on a registry of their own.

- create / update (of `spec`) / resume: the controller records the spec and wakes the policy;
- a task per policy (started by the controller on create/resume): the control loop's timer, at
  the policy's own `rollout.interval`, woken early by a spec change (a Kopf timer has one fixed
  interval for all objects, and a Kopf daemon would put a finalizer on every policy);
- delete: no finalizer for `xds` and `dryRun` outputs (nothing outside the object to clean up: the
  replicas stop serving the policy's routes when they see it gone); for `destinationRule` a
  finalizer, so the DestinationRules it wrote are removed before the policy goes;
- a validating admission webhook for the cross-field rules (`on.validate`, Kopf's managed
  ValidatingWebhookConfiguration), failing open: the controller re-checks every spec anyway;
- startup: Kopf's settings (progress in `slate.dev/` annotations, quiet event posting, the webhook
  server) and the login from the operator's own kubeconfig.

Everything the handlers need comes from Kopf's `memo` (an `OperatorMemo`), built by app.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from slate.operator.controller import Controller, invalid_message
from slate.operator.destinationrule import RuleStore
from slate.operator.kube import GROUP, PLURAL, VERSION

log = logging.getLogger("slate.operator.handlers")

WEBHOOK_ID = "validate.trafficpolicies.slate.dev"
"""Name of the managed ValidatingWebhookConfiguration (and of the webhook in it)."""


@dataclass
class WebhookOptions:
    host: str = "127.0.0.1"
    port: int = 9443
    certfile: str | None = None
    pkeyfile: str | None = None


@dataclass
class OperatorMemo:
    """What the handlers share (Kopf passes it as `memo`)."""

    controller: Controller
    connection: kopf.ConnectionInfo | None = None
    webhook: WebhookOptions | None = None
    rules: RuleStore | None = None


def _is_dr(spec: Any, **_: Any) -> bool:
    return hasattr(spec, "get") and spec.get("output") == "destinationRule"


def build_registry(webhook: bool = False) -> kopf.OperatorRegistry:
    """A fresh registry with every handler (several operators can run in one test process).

    `webhook`: also the validating admission webhook (Kopf then requires a webhook server)."""
    registry = kopf.OperatorRegistry()
    res = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="slate.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="slate.dev", key="last-handled-configuration"
        )
        settings.posting.level = logging.ERROR  # our own Events say what happened
        settings.networking.request_timeout = 30
        settings.watching.server_timeout = 60
        opts = memo.webhook if isinstance(memo, OperatorMemo) else None
        if opts is not None:
            settings.admission.server = kopf.WebhookServer(
                addr=opts.host,
                port=opts.port,
                host=opts.host,
                certfile=opts.certfile,
                pkeyfile=opts.pkeyfile,
            )
            settings.admission.managed = WEBHOOK_ID

    @kopf.on.login(registry=registry)
    def login(memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
        if isinstance(memo, OperatorMemo) and memo.connection is not None:
            return memo.connection
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(*res, registry=registry)
    @kopf.on.create(*res, registry=registry)
    @kopf.on.update(*res, field="spec", registry=registry)
    async def observe(body: kopf.Body, memo: Any, **_: Any) -> None:
        memo.controller.observe(dict(body))

    @kopf.on.event(*res, registry=registry)
    async def watched(
        type: str | None, name: str, namespace: str | None, memo: Any, **_: Any
    ) -> None:
        # A policy without a finalizer is gone at once; the watch's DELETED event is the sign.
        if type == "DELETED":
            memo.controller.forget(namespace or "default", name)

    @kopf.on.delete(*res, when=_is_dr, id="destination-rules", registry=registry)
    async def delete_rules(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        ns = namespace or "default"
        if memo.rules is not None:
            await asyncio.to_thread(memo.rules.delete_all, ns, name)
        memo.controller.forget(ns, name)

    @kopf.on.cleanup(registry=registry)
    async def stop_loops(memo: Any, **_: Any) -> None:
        await memo.controller.shutdown()

    if webhook:

        @kopf.on.validate(
            *res,
            id=WEBHOOK_ID,
            operations=["CREATE", "UPDATE"],
            ignore_failures=True,
            registry=registry,
        )
        def validate(spec: kopf.Spec, **_: Any) -> None:
            problem = invalid_message(dict(spec))
            if problem is not None:
                raise kopf.AdmissionError(problem, code=422)

    return registry


class KopfEvents:
    """Kubernetes Events through Kopf's poster (inside Kopf's handlers and daemons)."""

    def event(self, ref: Any, type: str, reason: str, message: str) -> None:
        try:
            kopf.event(ref.body(), type=type, reason=reason, message=message)
        except Exception:  # outside Kopf's context (tests, shutdown): log instead
            log.info("event %s %s %s: %s", ref.key, type, reason, message)
