"""The Kopf handlers against kmock, a NAMED FAKE Kubernetes API (in-memory objects, list + watch,
merge patches, /status), with a stand-in control loop: create -> status written by the daemon;
spec change -> the loop is updated and woken; delete -> the policy is forgotten.

kmock has no schema validation, generation or resourceVersion (the real-apiserver tests cover
those); it replays objects that exist before the operator starts twice, so these tests create
objects after the operator is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
import yaml
from standin_loop import standin_factory

from slate.operator.controller import Controller, PolicyRef
from slate.operator.handlers import KopfEvents, OperatorMemo, build_registry
from slate.operator.metrics import OperatorMetrics

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[2]
BASE = "/apis/slate.dev/v1alpha1"


def manifest(name: str = "shop", **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples/policies/shop.yaml").read_text())
    doc["metadata"].update(
        name=name,
        uid=f"uid-{name}",
        creationTimestamp="2026-12-04T10:00:00Z",
        resourceVersion="1",  # kmock keeps none; Kopf's JSON patches test it
        generation=1,
    )
    doc["metadata"]["namespace"] = "shop"
    doc["spec"].update(spec)
    return doc


class HttpStatusSink:
    """Writes status through the fake API (as KubeStatusSink does through the real one)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        async with aiohttp.ClientSession() as s:
            r = await s.patch(
                f"{self.url}{BASE}/namespaces/{namespace}/trafficpolicies/{name}/status",
                json={"status": dict(status)},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            r.raise_for_status()


class RecordingEvents(KopfEvents):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def event(self, ref: PolicyRef, type: str, reason: str, message: str) -> None:
        self.seen.append((ref.key, type, reason))
        super().event(ref, type, reason, message)


@pytest.fixture
def api(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    kmock.resources["slate.dev/v1alpha1/trafficpolicies"] = kmock.ResourceInfo(
        kind="TrafficPolicy",
        namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete", "update"},
        subresources={"status"},
    )
    # Kopf waits for the namespaces resource to be discovered, even when cluster-wide.
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"list", "watch", "get"}
    )
    return kmock


@contextlib.asynccontextmanager
async def operator(
    api: kmock.KubernetesEmulator,
) -> AsyncIterator[tuple[Controller, RecordingEvents]]:
    events = RecordingEvents()
    controller = Controller(
        standin_factory,
        HttpStatusSink(str(api.url)),
        events,
        lambda p, u: [],
        OperatorMetrics(),
        run_tasks=True,
    )
    memo = OperatorMemo(controller, connection=kopf.ConnectionInfo(server=str(api.url).rstrip("/")))
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=build_registry(),
            clusterwide=True,
            standalone=True,
            memo=memo,
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 20)
        yield controller, events
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 20)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            got = check()
            if got:
                return got
        except (KeyError, IndexError, AssertionError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.05)


def stored(api: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    key = ("slate.dev/v1alpha1/trafficpolicies", "shop", name)
    for k, obj in api.objects.items():
        if (str(k[0].plural), k[1], k[2]) == ("trafficpolicies", "shop", name):
            return copy.deepcopy(dict(obj.raw))
    raise KeyError(key)


async def post(api: kmock.KubernetesEmulator, doc: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"{str(api.url).rstrip('/')}{BASE}/namespaces/shop/trafficpolicies", json=doc
        )
        r.raise_for_status()


async def patch(api: kmock.KubernetesEmulator, name: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.patch(
            f"{str(api.url).rstrip('/')}{BASE}/namespaces/shop/trafficpolicies/{name}",
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        r.raise_for_status()


async def delete(api: kmock.KubernetesEmulator, name: str) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.delete(
            f"{str(api.url).rstrip('/')}{BASE}/namespaces/shop/trafficpolicies/{name}"
        )
        r.raise_for_status()


async def test_create_runs_the_loop_and_writes_status(api: kmock.KubernetesEmulator) -> None:
    async with operator(api) as (_controller, events):
        await post(api, manifest())
        status = await eventually(lambda: stored(api, "shop").get("status", {}).get("routes"))
        # The stand-in moves us-west from 1.0 towards the even split by 0.1 per interval; on a
        # loaded machine more than one interval may pass before the first status is read.
        west = status[0]["weights"][1]
        assert west["cluster"] == "us-west"
        assert west["weight"] in (0.9, 0.8, 0.7, 0.6, 0.5), west
        st = stored(api, "shop")["status"]
        ready = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "RollingOut")
        await eventually(lambda: ("shop/shop", "Normal", "RollingOut") in events.seen)
        # no finalizer for output xds: nothing outside the object to clean up
        assert not stored(api, "shop")["metadata"].get("finalizers")


async def test_spec_change_wakes_the_loop(api: kmock.KubernetesEmulator) -> None:
    async with operator(api) as (controller, _):
        await post(api, manifest(rollout={"interval": "1h", "maxShiftPerInterval": 0.1}))
        await eventually(lambda: stored(api, "shop").get("status", {}).get("routes"))
        rec = controller.records["shop/shop"]
        first = rec.loop
        await patch(
            api,
            "shop",
            {"metadata": {"resourceVersion": "2", "generation": 2}, "spec": {"paused": True}},
        )
        # woken at once (the interval is an hour), same loop, now paused
        await eventually(
            lambda: any(c["type"] == "Paused" for c in stored(api, "shop")["status"]["conditions"])
        )
        assert rec.loop is first


async def test_invalid_spec_reported_without_webhook(api: kmock.KubernetesEmulator) -> None:
    async with operator(api) as _:
        bad = manifest()
        bad["spec"]["network"]["egress"]["prices"][0]["from"] = "mars"
        await post(api, bad)
        cond = await eventually(lambda: stored(api, "shop")["status"]["conditions"][0])
        assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "False", "InvalidSpec")
        assert cond["message"].startswith("spec.network.egress.prices[0].from: unknown cluster")


async def test_delete_forgets_the_policy(api: kmock.KubernetesEmulator) -> None:
    async with operator(api) as (controller, _):
        await post(api, manifest())
        await eventually(lambda: "shop/shop" in controller.records)
        await eventually(lambda: stored(api, "shop").get("status", {}).get("routes"))
        await delete(api, "shop")
        await eventually(lambda: "shop/shop" not in controller.records)
