"""End to end with nothing stood in: a real kube-apiserver (two, for two clusters), the operator as
`slate operator` runs it (the default loop factory: slate.control's ControlLoop), a real Prometheus
holding the simulated mesh's Istio metrics (backfilled by slate/sim, then scraped live from the
simulator's exporter), and a real Envoy taking the weights over xDS.

The mesh (hidden truth, never shown to the operator): `cart` runs in us-east and us-west with equal
capacity; us-east's gateway gets ~6x the traffic of us-west's, so sending everything to the local
cluster (what the mesh starts with) queues in us-east, and the optimum sends a quarter to a third of
us-east's calls to us-west (10 ms away). The test closes the loop: the weights the operator
publishes in status are what the simulated mesh runs under from then on.

Shown: TelemetryFresh=True and Solved=True; routes that move by at most maxShiftPerInterval per
interval, towards the truth's optimum (closer than the start by more than one step); the Envoy
receiving the status weights; Prometheus stopped -> TelemetryFresh=False (PrometheusUnavailable),
the weights held in status and at the Envoy; the policy deleted -> the Envoy back on slate's
default routing (local first).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from envoy_harness import Envoy, Upstreams
from kube_harness import KubeApi
from operator_world import World, conditions, prepare_clusters, wait_for, weights
from prometheus_harness import SimulatedPrometheus

from slate.model.routing import Route, Routing
from slate.model.scenario import Scenario
from slate.model.scenario_file import scenario_from_dict
from slate.optimizer import baselines
from slate.optimizer.solve import solve
from slate.sim.istio_metrics import truth_latency_model

pytest_plugins = ["kube_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_SHIFT = 0.1
TO = "cart.get"
MESH: dict[str, Any] = {
    "name": "shop-live",
    "clusters": ["us-west", "us-east"],
    "rtt_ms": {"us-west": {"us-east": 10}},
    "egress_usd_per_gb": {"default": 0.0},
    "services": {
        "cart": {
            "replicas": {"us-west": 2, "us-east": 2},
            "endpoints": {"get": {"service_ms": 10}},
        }
    },
    "ingress": [
        {
            "endpoint": TO,
            "rps": {"us-west": 30, "us-east": 175},
            "request_kb": 1,
            "response_kb": 4,
        }
    ],
}


def manifest(prometheus_url: str) -> dict[str, Any]:
    """What a user applies for this mesh: no replicas, service times or calls."""
    return {
        "apiVersion": "slate.dev/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "live", "namespace": "shop"},
        "spec": {
            "clusters": [{"name": "us-west"}, {"name": "us-east"}],
            "services": [
                {
                    "name": "cart",
                    "port": 7070,
                    "endpoints": [{"name": "get", "match": {"pathPrefix": "/get"}}],
                }
            ],
            "network": {
                "rtt": [{"from": "us-west", "to": "us-east", "ms": 10}],
                "egress": {"defaultUsdPerGb": 0},
            },
            "rollout": {"interval": "5s", "maxShiftPerInterval": MAX_SHIFT},
            "telemetry": {"prometheusUrl": prometheus_url},
        },
    }


class ClosedMesh:
    """Feeds the weights in the policy's status to the simulated mesh (what proxies would do)."""

    def __init__(self, world: World, sp: SimulatedPrometheus) -> None:
        self.world, self.sp = world, sp
        self.applied: list[tuple[tuple[str, str, str], dict[str, float]]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="closed-mesh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                routes = (self.world.policy("live").get("status") or {}).get("routes") or []
            except Exception:
                continue
            got = [
                (
                    (r["fromService"], r["fromCluster"], r["to"]),
                    {w["cluster"]: w["weight"] for w in r["weights"]},
                )
                for r in routes
            ]
            if got and got != self.applied:
                self.sp.set_routing(Routing(tuple(Route(*k, w) for k, w in got)))
                self.applied = got

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def mesh() -> Scenario:
    return scenario_from_dict(MESH)


@pytest.fixture(scope="module")
def live(
    kube: KubeApi,
    kube_remote: KubeApi,
    mesh: Scenario,
    prometheus_factory: Callable[..., SimulatedPrometheus],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[World, SimulatedPrometheus]]:
    sp = prometheus_factory(mesh, baselines.local_routing(mesh), history_s=10 * 60)
    ups = Upstreams({"us-east": 1, "us-west": 1})
    world = World(kube, kube_remote, tmp_path_factory.mktemp("operator-live"), ups)
    closed: ClosedMesh | None = None
    try:
        prepare_clusters(kube, kube_remote, ups)
        world.start_replica("live", webhook=False, loop="real", prometheus=sp.url)
        wait_for(world.leader, 20, "the replica leads")
        closed = ClosedMesh(world, sp)
        yield world, sp
    finally:
        if closed is not None:
            closed.stop()
        world.close()


def fresh_status(world: World) -> dict[str, Any] | None:
    p = world.policy("live")
    st: dict[str, Any] = p.get("status") or {}
    if st.get("observedGeneration") != p["metadata"]["generation"] or not st.get("routes"):
        return None
    return st


def distance(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a.get(c, 0.0) - b.get(c, 0.0)) for c in set(a) | set(b))


def envoy_split(envoy: Envoy) -> dict[str, float]:
    """The priority-0 share per region of `cart` at the Envoy."""
    got = envoy.eds_weights().get("cart", {})
    p0 = {region: w for region, (prio, w) in got.items() if prio == 0}
    total = sum(p0.values())
    return {region: w / total for region, w in p0.items()} if total else {}


def truth_optimum(mesh: Scenario) -> dict[str, float]:
    """The weights of ingress@us-east -> cart.get at the optimum of the hidden truth."""
    route = solve(mesh, truth_latency_model(mesh, "mmc")).routing.get("ingress", "us-east", TO)
    assert route is not None
    return dict(route.normalized())


def test_real_loop_status_rollout_envoy_outage_and_delete(
    live: tuple[World, SimulatedPrometheus], mesh: Scenario
) -> None:
    world, sp = live
    replica = world.replicas[0]
    doc = manifest(sp.url)
    done = world.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert done.returncode == 0, done.stderr

    # 1. The real loop reads Prometheus, learns and solves: status for the current generation.
    first = wait_for(lambda: fresh_status(world), 60, "status from the real loop", 0.2)
    conds = conditions(first)
    assert conds["TelemetryFresh"] == ("True", "Fresh"), first["conditions"]
    assert conds["Solved"][0] == "True", first["conditions"]
    assert conds["Ready"][0] == "True", first["conditions"]
    assert {"lastSolveTime", "solveSeconds", "predicted", "observed", "state"} <= set(first)

    # 2. A few intervals: the routes move towards the optimum, at most MAX_SHIFT per interval.
    seen = [first]
    deadline = time.monotonic() + 60
    while len(seen) < 4 and time.monotonic() < deadline:
        st = fresh_status(world)
        if st is not None and st["lastSolveTime"] != seen[-1]["lastSolveTime"]:
            seen.append(st)
        time.sleep(0.2)
    assert len(seen) >= 4, f"only {len(seen)} intervals in 60 s"
    history = [weights(s, TO) for s in seen]
    targets = [weights({"routes": s["targetRoutes"]}, TO) for s in seen]
    for s in seen:
        assert conditions(s)["TelemetryFresh"] == ("True", "Fresh"), s["conditions"]
        assert conditions(s)["Solved"][0] == "True", s["conditions"]
    # every interval's target offloads part of us-east's queue to us-west
    assert all(t.get("us-west", 0.0) > 0.0 for t in targets), targets
    for before, after in itertools.pairwise(history):
        assert distance(before, after) <= MAX_SHIFT + 1e-6, history
    # the routes were seen moving, and got closer to the truth's optimum than where the mesh
    # started (everything local) by more than one rollout step (the loop's own targets move as
    # it learns: how close it settles is the closed-loop tests' subject, tests/sim)
    assert any(distance(a, b) > 1e-6 for a, b in itertools.pairwise(history)), history
    best = truth_optimum(mesh)
    start = {"us-east": 1.0}
    assert min(distance(h, best) for h in history) < distance(start, best) - MAX_SHIFT, (
        history,
        best,
    )
    assert distance(history[-1], best) < distance(start, best), (history, best)
    fit = replica.metric('slate_fit_r2{cluster="us-east",namespace="shop",policy="live"')
    assert fit is not None and fit <= 1.0

    # 3. The Envoy gets the weights in status over xDS.
    envoy = world.envoy("envoy-live", replica.xds_port)

    def envoy_has_status_weights() -> bool:
        want = weights(world.policy("live")["status"], TO)
        got = envoy_split(envoy)
        return bool(got) and distance(got, want) < 0.01

    wait_for(envoy_has_status_weights, 30, "Envoy weights = status weights")

    # 4. Prometheus stops: TelemetryFresh=False, the weights in force are held.
    sp.prometheus.stop()

    def held() -> dict[str, Any] | None:
        st = world.policy("live")["status"]
        return st if conditions(st)["TelemetryFresh"][0] == "False" else None

    st = wait_for(held, 30, "TelemetryFresh=False")
    assert conditions(st)["TelemetryFresh"] == ("False", "PrometheusUnavailable")
    assert conditions(st)["Applied"] == ("False", "Held")
    kept = weights(st, TO)
    assert kept
    time.sleep(6)  # one more interval, still held
    st = world.policy("live")["status"]
    assert conditions(st)["TelemetryFresh"] == ("False", "PrometheusUnavailable")
    assert weights(st, TO) == kept
    assert distance(envoy_split(envoy), kept) < 0.01

    # 5. The policy is deleted: the Envoy is back on slate's default routing, local first.
    done = world.kube.kubectl("delete", "tp", "live", "-n", "shop", "--wait=true")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: envoy_split(envoy) == {"us-east": 1.0}, 20, "Envoy back on local-first")
    backstop = envoy.eds_weights()["cart"]["us-west"]
    assert backstop[0] == 1  # us-west stays as the priority-1 backstop
