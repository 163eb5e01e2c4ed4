"""`slate xds serve`: input errors exit 2 naming the field; the running server reloads its files."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import EnvoyFactory, Transport, Upstreams, assert_split, wait_until

from slate.cli import main

ROUTES = {
    "routes": [
        {
            "from_service": "frontend",
            "from_cluster": "us-west",
            "to": "cart",
            "weights": {"us-west": 0.8, "us-east": 0.2},
        },
    ]
}


def write_atomically(path: Path, text: str) -> None:
    """As a controller would: the server never sees a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_routes(path: Path, west: dict[str, float]) -> None:
    data = {
        "routes": [
            {"from_service": "frontend", "from_cluster": "us-west", "to": "cart", "weights": west}
        ]
    }
    write_atomically(path, json.dumps(data))


def write_endpoints(path: Path, clusters: dict[str, list[str]]) -> None:
    lines = ["services:", "  cart:", "    clusters:"]
    lines += [f"      {c}: {json.dumps(addrs)}" for c, addrs in clusters.items()]
    write_atomically(path, "\n".join(lines) + "\n")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    routes, eps = tmp_path / "routes.json", tmp_path / "endpoints.yaml"
    routes.write_text(json.dumps(ROUTES))
    write_endpoints(eps, {"us-west": ["127.0.0.1:8080"], "us-east": ["127.0.0.1:8081"]})
    return routes, eps


@pytest.mark.parametrize(
    ("routes_text", "endpoints_text", "expected"),
    [
        (None, None, "cannot read route file"),
        ("{not json", "services: {}", "not valid JSON"),
        (
            '{"routes": [{"from_service": "a", "from_cluster": "w", "to": "b", '
            '"weights": {"w": -1}}]}',
            "services: {}",
            "routes[0].weights.w: must be >= 0",
        ),
        (
            json.dumps(ROUTES),
            "services: {cart: {clusters: {w: [nope]}}}",
            "services.cart.clusters.w[0]: must be 'host:port'",
        ),
        (json.dumps(ROUTES), "services: [", "not valid YAML"),
        (json.dumps(ROUTES), None, "cannot read endpoints file"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    routes_text: str | None,
    endpoints_text: str | None,
    expected: str,
) -> None:
    routes, eps = tmp_path / "routes.json", tmp_path / "endpoints.yaml"
    if routes_text is not None:
        routes.write_text(routes_text)
    if endpoints_text is not None:
        eps.write_text(endpoints_text)
    code = main(["xds", "serve", "--routes", str(routes), "--endpoints", str(eps), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("slate: "), err
    assert expected in err


def test_busy_port_exits_2(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    routes, eps = files
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            ["xds", "serve", "--routes", str(routes), "--endpoints", str(eps), "--port", str(port)]
        )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("slate: --port: cannot listen on") and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--weight-total", "--reload-interval"])
def test_numeric_options_are_checked(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    routes, eps = files
    code = main(["xds", "serve", "--routes", str(routes), "--endpoints", str(eps), flag, "0"])
    assert code == 2 and capsys.readouterr().err.startswith(f"slate: {flag}: must be")


class Served:
    """`slate xds serve` as a child process (stopped with SIGTERM at teardown)."""

    def __init__(self, routes: Path, eps: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slate.cli",
                "xds",
                "serve",
                "--routes",
                str(routes),
                "--endpoints",
                str(eps),
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--reload-interval",
                "0.05",
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "slate xds: serving on H:P metrics on H:P"
        assert line.startswith("slate xds: serving on "), (line, self.log())
        words = line.split()
        self.port = int(words[4].rsplit(":", 1)[1])
        self.metrics = words[7]

    def log(self) -> str:
        return self.log_path.read_text()

    def metric(self, name: str) -> dict[str, float]:
        """{labels text: value} of one metric from /metrics."""
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                key, _, value = line.rpartition(" ")
                out[key[len(name) :]] = float(value)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


@pytest.mark.integration
def test_serve_reloads_files_and_envoy_follows(
    files: tuple[Path, Path], upstreams: Upstreams, envoys: EnvoyFactory, tmp_path: Path
) -> None:
    routes, eps = files
    write_endpoints(eps, upstreams.addresses())
    s = Served(routes, eps, tmp_path / "serve.log")
    try:
        west = envoys(
            "west", region="us-west", xds_port=s.port, transport=Transport("ads", "delta")
        )

        def cart() -> Any:
            return west.eds_weights().get("cart")

        wait_until(
            lambda: cart() == {"us-west": (0, 8000), "us-east": (0, 2000), "eu": (1, 1)},
            5,
            what="initial weights",
        )
        assert s.metric("slate_xds_streams") == {
            '{api="ads",mode="delta",view="frontend@us-west"}': 1.0
        }

        write_routes(routes, {"us-west": 0.5, "us-east": 0.5})
        wait_until(
            lambda: cart() == {"us-west": (0, 5000), "us-east": (0, 5000), "eu": (1, 1)},
            5,
            what="reloaded routes",
        )

        # A bad routes file is refused with a logged reason; the previous state stays.
        write_atomically(routes, '{"routes": [{"from_service": "frontend"}]}')
        wait_until(lambda: "reload_rejected" in s.log(), 5, what="the rejection log line")
        assert "routes[0].from_cluster" in s.log()
        time.sleep(0.2)
        assert cart() == {"us-west": (0, 5000), "us-east": (0, 5000), "eu": (1, 1)}
        assert_split(west.split("cart", 400), {"us-west": 0.5, "us-east": 0.5}, 400)

        # Endpoints change: eu leaves, and the backstop locality goes with it.
        addrs = upstreams.addresses()
        write_endpoints(eps, {"us-west": addrs["us-west"], "us-east": addrs["us-east"]})
        wait_until(
            lambda: cart() == {"us-west": (0, 5000), "us-east": (0, 5000)},
            5,
            what="reloaded endpoints",
        )
        reloads = s.metric("slate_xds_reloads_total")
        assert reloads['{file="routes",result="applied"}'] == 1
        assert reloads['{file="routes",result="rejected"}'] == 1
        assert reloads['{file="endpoints",result="applied"}'] == 1
    finally:
        assert s.stop() == 0, s.log()
    # Stopped with a proxy still connected: a clean shutdown, no error logs or tracebacks.
    assert "level=error" not in s.log() and "Traceback" not in s.log(), s.log()
