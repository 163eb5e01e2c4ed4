"""A real Prometheus (the distribution's package) for integration tests, fed by the simulator.

`simulated_prometheus(workdir, scenario, routing, ...)`:
1. plays `history_s` of the scenario's Istio metrics into a MemoryBackend (ending a second ago),
2. writes them as OpenMetrics and backfills them with `promtool tsdb create-blocks-from
   openmetrics`, labelled with the job/instance the live scrape will add, so series continue,
3. serves the same generator live on a loopback port (prometheus-client), recording every live
   scrape into the same MemoryBackend,
4. starts Prometheus on a free loopback port with a temp config scraping that exporter every
   `scrape_interval_s`, and waits until it is ready and has scraped once.

`SimulatedPrometheus.stop()` ends Prometheus and the exporter; Prometheus alone can be stopped
(`prometheus.stop()`) and started again on the same data and port (`prometheus.start()`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from slate.model.routing import Routing
from slate.model.scenario import Scenario
from slate.sim.istio_metrics import (
    IstioMetrics,
    LiveCollector,
    Truth,
    serve_metrics,
    write_openmetrics,
)
from slate.telemetry.memory import MemoryBackend

JOB = "slate-sim"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries() -> tuple[str, str]:
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not tool:
        raise RuntimeError("prometheus/promtool not on PATH: run scripts/install-prometheus.sh")
    return prom, tool


def backfill(openmetrics: Path, data_dir: Path) -> None:
    _, tool = binaries()
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [tool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass
class PrometheusProcess:
    """One Prometheus on 127.0.0.1:`port` over `data_dir`, scraping `targets`."""

    workdir: Path
    targets: list[str]
    scrape_interval_s: float = 1.0
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def start(self, timeout_s: float = 30.0) -> None:
        prom, _ = binaries()
        iv = f"{self.scrape_interval_s:g}s"
        config = {
            "global": {"scrape_interval": iv, "evaluation_interval": "1m"},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": iv,
                    "static_configs": [{"targets": self.targets}],
                }
            ]
            if self.targets
            else [],
        }
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            [
                prom,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: see {self.workdir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("prometheus not ready in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def query(self, promql: str, at: float | None = None) -> list[Any]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            data: list[Any] = json.load(r)["data"]["result"]
            return data


@dataclass
class SimulatedPrometheus:
    gen: IstioMetrics
    store: MemoryBackend  # the same samples Prometheus holds (live ones at collection time)
    prometheus: PrometheusProcess
    exporter: Any
    history_end: float
    collector: LiveCollector

    @property
    def url(self) -> str:
        return self.prometheus.url

    def set_routing(self, routing: Routing) -> None:
        """The weights in force in the simulated mesh from now on (safe while it is scraped)."""
        with self.collector.lock:
            self.gen.set_routing(routing)

    def wait_for_live_scrapes(self, n: int = 2, timeout_s: float = 60.0) -> float:
        """Wait until Prometheus holds `n` live scrapes after the backfilled history; returns the
        newest sample's timestamp."""
        deadline = time.monotonic() + timeout_s
        first: float | None = None
        interval = self.prometheus.scrape_interval_s
        while time.monotonic() < deadline:
            res = self.prometheus.query("max(timestamp(istio_requests_total))")
            if res:
                newest = float(res[0]["value"][1])
                if newest > self.history_end:
                    first = newest if first is None else first
                    if newest >= first + (n - 1) * interval * 0.9:
                        return newest
            time.sleep(0.2)
        raise RuntimeError("no live scrape reached Prometheus in time")

    def stop(self) -> None:
        self.prometheus.stop()
        self.exporter.shutdown()


def simulated_prometheus(
    workdir: Path,
    scenario: Scenario,
    routing: Routing,
    *,
    namespace: str = "shop",
    truth: Truth = "mmc",
    seed: int = 1,
    history_s: float = 20 * 60,
    step_s: float = 5.0,
    scrape_interval_s: float | None = None,
    drift: float = 0.0,
    buckets: bool = False,
    extra_openmetrics: Callable[[float], str] | None = None,
) -> SimulatedPrometheus:
    """See the module docstring. The live scrape interval defaults to the history's `step_s`:
    Prometheus's rate() extrapolates by the mean sample spacing, so a window mixing 15 s history
    with 1 s live scrapes reads up to ~8% low at its start. `buckets`: also the `_bucket` series
    (slate never queries them; 20x the samples). `extra_openmetrics(history_end)`: more text
    to backfill."""
    scrape_interval_s = step_s if scrape_interval_s is None else scrape_interval_s
    workdir.mkdir(parents=True, exist_ok=True)
    gen = IstioMetrics(
        scenario, routing, truth=truth, seed=seed, namespace=namespace, drift=drift, buckets=buckets
    )
    store = MemoryBackend()
    now = time.time()
    end = round(now - 1.0, 3)
    start = end - step_s * int(history_s / step_s)
    gen.run(store, start, end, step_s)
    exporter_port = free_port()
    instance = f"127.0.0.1:{exporter_port}"
    om = workdir / "history.om.txt"
    write_openmetrics(store, om, {"job": JOB, "instance": instance})
    prom = PrometheusProcess(workdir, [instance], scrape_interval_s)
    backfill(om, prom.data_dir)
    if extra_openmetrics:
        extra = workdir / "extra.om.txt"
        extra.write_text(extra_openmetrics(end))
        backfill(extra, prom.data_dir)
    collector = LiveCollector(gen, store)
    server, _thread = serve_metrics(collector, exporter_port)
    try:
        prom.start()
    except Exception:
        server.shutdown()
        raise
    return SimulatedPrometheus(gen, store, prom, server, end, collector)


@pytest.fixture(scope="module")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SimulatedPrometheus]]:
    """Start a real Prometheus (loopback, free port) holding a scenario's simulated Istio metrics:
    backfilled history plus a live scrape of the simulator. `factory(scenario, routing,
    **options of simulated_prometheus)`; everything started is stopped at module end.
    Exported to every test directory by tests/conftest.py."""
    started: list[SimulatedPrometheus] = []

    def start(scenario: Scenario, routing: Routing, **options: Any) -> SimulatedPrometheus:
        workdir = tmp_path_factory.mktemp("prometheus")
        sp = simulated_prometheus(workdir, scenario, routing, **options)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.stop()
