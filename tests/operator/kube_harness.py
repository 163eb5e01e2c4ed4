"""A real Kubernetes API for tests: etcd + kube-apiserver 1.20 on free loopback ports.

The binary comes from scripts/kube-apiserver.sh (built once from Debian's kubernetes source package,
cached in ~/.cache/slate). Each `KubeApi` is one "cluster": its own etcd, its own API server, an
admin token (group system:masters) and a kubeconfig file. There is no controller-manager or
scheduler: tests create EndpointSlices themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "kube-apiserver.sh"
CRD = ROOT / "crds" / "trafficpolicy.yaml"
OPERATOR_USER = "slate-operator"
"""A token user standing for the operator's ServiceAccount (no controller-manager mints tokens)."""


def kubectl_binary() -> str:
    """kubectl from PATH (any version that talks to 1.20; the tests need only apply/get/create)."""
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("no kubectl on PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_binary: str | None = None


def kube_apiserver_binary() -> str:
    """The cached kube-apiserver path (building it on a cold machine). Raises RuntimeError."""
    global _binary
    if _binary is None:
        done = subprocess.run(
            [str(SCRIPT)], capture_output=True, text=True, timeout=3600, check=False
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"{SCRIPT.name} failed: {done.stderr.strip()[-2000:]}")
        _binary = done.stdout.strip().splitlines()[-1]
    return _binary


def etcd_binary() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)


def _ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class KubeApi:
    """One API server ("cluster") with its own etcd; `stop()` ends both and keeps nothing."""

    name: str
    workdir: Path
    port: int
    token: str
    kubeconfig: Path
    _procs: list[subprocess.Popen[bytes]]
    operator_kubeconfig: Path
    """The user OPERATOR_USER: no rights until a test binds deploy/rbac*.yaml's roles to it."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @staticmethod
    def start(name: str, workdir: Path, timeout: float = 60.0) -> KubeApi:
        binary = kube_apiserver_binary()
        etcd = etcd_binary()
        if etcd is None:
            raise RuntimeError("etcd is not installed (scripts/kube-apiserver.sh installs it)")
        workdir.mkdir(parents=True, exist_ok=True)
        procs: list[subprocess.Popen[bytes]] = []
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_log = open(workdir / "etcd.log", "wb")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [
                    etcd,
                    "--data-dir", str(workdir / "etcd"),
                    "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                    "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                    "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                    "--log-level", "error",
                    "--logger", "zap",
                ],
                stdout=etcd_log,
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        token = os.urandom(16).hex()
        # admin for the tests; slate-operator (no groups) holds only what deploy/rbac*.yaml grant
        operator_token = os.urandom(16).hex()
        (workdir / "tokens.csv").write_text(
            f'{token},admin,admin,"system:masters"\n'
            f"{operator_token},{OPERATOR_USER},{OPERATOR_USER}\n"
        )
        key = workdir / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        api_log = open(workdir / "kube-apiserver.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
                    "--bind-address", "127.0.0.1",
                    "--advertise-address", "127.0.0.1",
                    "--secure-port", str(api_port),
                    "--cert-dir", str(workdir / "certs"),
                    "--token-auth-file", str(workdir / "tokens.csv"),
                    "--authorization-mode", "RBAC",
                    "--service-account-issuer", "https://kubernetes.default.svc",
                    "--service-account-key-file", str(key),
                    "--service-account-signing-key-file", str(key),
                    "--service-cluster-ip-range", "10.96.0.0/24",
                    "--disable-admission-plugins", "ServiceAccount",
                    "--logtostderr",
                    "--v", "1",
                ],
                stdout=api_log,
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(kubeconfig_doc(name, f"https://127.0.0.1:{api_port}", token))
        )
        operator_kubeconfig = workdir / "kubeconfig-operator"
        operator_kubeconfig.write_text(
            yaml.safe_dump(
                kubeconfig_doc(name, f"https://127.0.0.1:{api_port}", operator_token, OPERATOR_USER)
            )
        )
        api = KubeApi(name, workdir, api_port, token, kubeconfig, procs, operator_kubeconfig)
        try:
            api.wait_ready(timeout)
        except BaseException:
            api.stop()
            raise
        return api

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(req, context=_ctx(), timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for p in self._procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{self.name}: a process exited ({p.args!r}): {self.log()}")
            try:
                req = urllib.request.Request(
                    self.url + "/readyz", headers={"Authorization": f"Bearer {self.token}"}
                )
                with urllib.request.urlopen(req, context=_ctx(), timeout=2) as resp:
                    if resp.status == 200:
                        # the default namespace appears a moment after readyz
                        self.request("GET", "/api/v1/namespaces/default")
                        return
            except Exception as e:  # not up yet
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name}: kube-apiserver not ready in {timeout}s ({last}): {self.log()}"
        )

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server (the one on PATH); never raises on a non-zero exit."""
        return subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def install_crd(self, timeout: float = 30.0) -> None:
        """Create the TrafficPolicy CRD (through the API) and wait until it is Established."""
        doc = yaml.safe_load(CRD.read_text())
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        self.request("POST", path, doc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.request("GET", f"{path}/{doc['metadata']['name']}")
            conds = {
                c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []
            }
            if conds.get("Established") == "True":
                # discovery lags the condition a little
                try:
                    self.request("GET", "/apis/slate.dev/v1alpha1/trafficpolicies")
                    return
                except urllib.error.HTTPError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("the TrafficPolicy CRD was not established in time")

    def log(self, tail: int = 3000) -> str:
        p = self.workdir / "kube-apiserver.log"
        return p.read_text(errors="replace")[-tail:] if p.exists() else ""

    def stop(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def kubeconfig_doc(name: str, server: str, token: str, user: str = "admin") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }
