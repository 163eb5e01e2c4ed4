"""TLS, mTLS with SPIFFE identities mapped to the views they may read, certificate rotation.

Certificates are made with `openssl` for each test module (a CA, a server certificate for
127.0.0.1, client certificates with Istio-style SPIFFE URI SANs)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import OPENSSL, make_ca, make_cert
from test_xds_server import ADS_SOTW, Stream, new_cache, run
from xds_testlib import node, parse_sotw, sotw

from slate.cli import main
from slate.xds.metrics import XdsMetrics
from slate.xds.protocol import DEFAULT_LIMITS, Limits
from slate.xds.security import (
    Authorizer,
    IdentityTable,
    TlsFiles,
    identity_table_from_data,
    parse_spiffe,
    server_credentials,
)
from slate.xds.server import XdsServer

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "ca2")
    make_cert(d, "server", "DNS:localhost,IP:127.0.0.1")
    make_cert(d, "server2", "DNS:localhost,IP:127.0.0.1", ca="ca2")
    make_cert(d, "frontend", "URI:spiffe://cluster.local/ns/shop/sa/frontend")
    make_cert(d, "frontend2", "URI:spiffe://cluster.local/ns/shop/sa/frontend", ca="ca2")
    make_cert(d, "cartsa", "URI:spiffe://cluster.local/ns/shop/sa/cart")
    make_cert(d, "foreign", "URI:spiffe://evil.example/ns/shop/sa/frontend")
    make_cert(d, "plain", "DNS:client.example")
    yield d


TABLE = identity_table_from_data(
    {
        "trust_domain": "cluster.local",
        "identities": [
            {"namespace": "shop", "service_account": "frontend", "services": ["frontend"]}
        ],
    }
)


def client_creds(d: Path, who: str | None, ca: str = "ca") -> grpc.ChannelCredentials:
    root = (d / f"{ca}.crt").read_bytes()
    if who is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=(d / f"{who}.key").read_bytes(),
        certificate_chain=(d / f"{who}.crt").read_bytes(),
    )


@asynccontextmanager
async def secure_server(
    d: Path,
    *,
    mtls: bool,
    table: IdentityTable | None = None,
    files: TlsFiles | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> AsyncIterator[tuple[XdsServer, int]]:
    metrics = XdsMetrics()
    files = files or TlsFiles(d / "server.crt", d / "server.key", d / "ca.crt" if mtls else None)
    server = XdsServer(
        new_cache(),
        metrics=metrics,
        credentials=server_credentials(files, metrics),
        authorizer=Authorizer(table, metrics) if table else None,
        limits=limits,
    )
    port = await server.start("127.0.0.1:0")
    try:
        yield server, port
    finally:
        await server.stop(grace=0)


async def ask(port: int, creds: grpc.ChannelCredentials | None, service: str = "frontend") -> Any:
    """A CLA request from `service`'s view; returns the response bytes or the status code."""
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)
    async with channel:
        call = Stream(channel, ADS_SOTW)
        try:
            await call.write(sotw(["cart"], with_node=node(service=service)))
            response = asyncio.ensure_future(call.responses.get())
            ended = asyncio.ensure_future(call.call.code())
            await asyncio.wait({response, ended}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            if response.done():
                return response.result()
            response.cancel()
            return await call.status()
        except grpc.aio.AioRpcError:
            return await call.status()
        finally:
            call.cancel()


def test_spiffe_ids_parse() -> None:
    sid = parse_spiffe("spiffe://cluster.local/ns/shop/sa/frontend")
    assert sid is not None and (sid.namespace, sid.service_account) == ("shop", "frontend")
    for bad in ("spiffe://cluster.local/ns/shop", "https://x/ns/a/sa/b", "spiffe:///ns//sa/x"):
        assert parse_spiffe(bad) is None


def test_tls_serves_tls_clients_and_not_plaintext_ones(certs: Path) -> None:
    async def scenario() -> None:
        async with secure_server(certs, mtls=False) as (_, port):
            got = await ask(port, client_creds(certs, None))
            assert isinstance(got, bytes) and "cart" in parse_sotw(got)[1]
            assert await ask(port, None) == grpc.StatusCode.UNAVAILABLE

    run(scenario())


def test_mtls_identity_reads_only_its_views(certs: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with secure_server(certs, mtls=True, table=TABLE) as (server, port):
            got = await ask(port, client_creds(certs, "frontend"))
            assert isinstance(got, bytes) and "cart" in parse_sotw(got)[1]
            denied = grpc.StatusCode.PERMISSION_DENIED
            for _ in range(3):  # logged once, counted three times
                assert await ask(port, client_creds(certs, "frontend"), "checkout") == denied
            assert await ask(port, client_creds(certs, "cartsa"), "cart") == denied
            assert await ask(port, client_creds(certs, "foreign")) == denied
            assert await ask(port, client_creds(certs, "plain")) == denied
            # Without a client certificate the handshake itself fails.
            assert await ask(port, client_creds(certs, None)) == grpc.StatusCode.UNAVAILABLE
            get = server.metrics.registry.get_sample_value
            assert get("slate_xds_refused_total", {"reason": "view_not_allowed"}) == 3
            # cartsa is of this mesh but not in the table; foreign is of another trust domain.
            assert get("slate_xds_refused_total", {"reason": "unknown_identity"}) == 1
            assert get("slate_xds_refused_total", {"reason": "untrusted_domain"}) == 1
            assert get("slate_xds_refused_total", {"reason": "no_identity"}) == 1

    run(scenario())
    refused = [r for r in caplog.records if "stream_refused" in r.getMessage()]
    assert len(refused) == 4, [r.getMessage() for r in refused]  # once per (peer, reason)


def test_rotated_certificate_files_apply_to_new_connections(certs: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(certs / "server.crt", cert)
    shutil.copy(certs / "server.key", key)

    async def scenario() -> None:
        files = TlsFiles(cert, key)
        async with secure_server(certs, mtls=False, files=files) as (server, port):
            assert isinstance(await ask(port, client_creds(certs, None)), bytes)
            new_ca = client_creds(certs, None, ca="ca2")
            assert await ask(port, new_ca) == grpc.StatusCode.UNAVAILABLE
            # Rotate (as a Secret volume update would); a broken half-way state is refused first.
            key.write_text("not a key")
            cert.write_text("-----BEGIN nonsense")
            assert isinstance(await ask(port, client_creds(certs, None)), bytes)
            shutil.copy(certs / "server2.key", key)
            shutil.copy(certs / "server2.crt", cert)
            assert isinstance(await ask(port, new_ca), bytes)
            get = server.metrics.registry.get_sample_value
            assert get("slate_xds_reloads_total", {"file": "tls", "result": "applied"}) == 1

    run(scenario())


def test_a_replaced_client_ca_reaches_connected_streams_within_the_connection_age(
    certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Certificates are checked at the handshake, so a connected proxy keeps its stream across a
    client CA rotation until its connection reaches --max-connection-age (here 1 s, and 0.5 s of
    grace instead of 10): then the stream ends, and the proxy's reconnect is a new handshake that
    the new CA decides. A client of the new CA gets in."""
    import slate.xds.server as server_mod

    monkeypatch.setattr(server_mod, "CONNECTION_AGE_GRACE_S", 0.5)
    client_ca = tmp_path / "client-ca.crt"
    shutil.copy(certs / "ca.crt", client_ca)
    files = TlsFiles(certs / "server.crt", certs / "server.key", client_ca)

    async def scenario() -> None:
        limits = Limits(max_connection_age_s=1.0)
        async with secure_server(certs, mtls=True, files=files, limits=limits) as (_s, port):
            old = client_creds(certs, "frontend")
            channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", old)
            async with channel:
                call = Stream(channel, ADS_SOTW)
                await call.write(sotw(["cart"], with_node=node(service="frontend")))
                assert "cart" in parse_sotw(await call.read())[1]
                shutil.copy(certs / "ca2.crt", client_ca)  # the client CA is replaced
                # The connected stream lives on until its connection's age (+-10%) and grace.
                code = await asyncio.wait_for(call.call.code(), 10)
                assert code != grpc.StatusCode.OK, code
                call.cancel()
            assert await ask(port, old) == grpc.StatusCode.UNAVAILABLE  # refused at handshake
            got = await ask(port, client_creds(certs, "frontend2", ca="ca"))
            assert isinstance(got, bytes) and "cart" in parse_sotw(got)[1]

    run(scenario())


def test_identity_table_without_mtls_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], certs: Path
) -> None:
    table = tmp_path / "ids.yaml"
    table.write_text("identities: []\n")
    code = main(
        ["xds", "serve", "--routes", "r", "--endpoints", "e", "--identity-table", str(table)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--identity-table" in err, err


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--policy", "p.yaml", "--xds-port", "0", "--endpoints", "e.yaml"],
        ["operator", "--prometheus", "http://127.0.0.1:9090"],
    ],
    ids=["run", "operator"],
)
def test_every_xds_command_checks_the_security_flags_alike(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`slate run` and `slate operator` take `slate xds serve`'s TLS flags, with its checks."""
    for flags, named in (
        (["--tls-client-ca", "ca.crt"], "--tls-client-ca"),
        (["--metrics-tls-key", "k.pem"], "--metrics-tls-cert"),
        (["--metrics-tls-cert", "c.pem", "--metrics-tls-key", "k.pem"], "--metrics-tls-cert"),
        (["--max-connection-age", "0.5"], "--max-connection-age"),
        (["--max-connection-age", "nan"], "--max-connection-age"),
    ):
        code = main([*command, *flags])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and named in err, (flags, err)


def test_run_and_operator_hand_the_connection_age_to_their_xds_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-connection-age reaches the server's Limits in `slate run` and `slate operator` (the
    server's use of it: test_a_replaced_client_ca_reaches_connected_streams_...)."""
    import slate.control.cli as run_cli
    import slate.operator.app as app
    from slate.model.errors import InputError

    seen: list[object] = []

    class Captured(run_cli._XdsThread):
        def start(self) -> int:
            seen.append(self.server_args["limits"])
            raise InputError("--xds-port", "captured")

    monkeypatch.setattr(run_cli, "_XdsThread", Captured)
    root = Path(__file__).resolve().parents[2]
    code = main(
        [
            "run",
            *("--policy", str(root / "examples/policies/shop.yaml")),
            *("--prometheus", "http://127.0.0.1:1"),
            *("--endpoints", str(root / "examples/xds/endpoints.yaml")),
            *("--xds-port", "0", "--max-connection-age", "60"),
        ]
    )
    assert code == 2 and "captured" in capsys.readouterr().err

    def operator_run(cfg: Any) -> int:
        seen.append(cfg.max_connection_age_s)
        return 0

    monkeypatch.setattr(app, "run", operator_run)
    code = main(["operator", "--prometheus", "http://127.0.0.1:9090", "--max-connection-age", "0"])
    assert code == 0
    assert seen == [Limits(max_connection_age_s=60.0), 0.0], seen


def test_slate_run_serves_its_xds_port_over_mtls(certs: Path, tmp_path: Path) -> None:
    """`slate run --xds-port` with the TLS flags: an identity in the table gets its view's CLAs,
    a client without a certificate does not get through the handshake; /metrics likewise.
    (Prometheus is not reachable here, so the loop holds and the server serves the endpoints'
    local-first default.)"""
    import os
    import re
    import signal
    import socket
    import subprocess
    import sys

    table = tmp_path / "ids.yaml"
    table.write_text(
        "trust_domain: cluster.local\nidentities:\n"
        "- {namespace: shop, service_account: frontend, services: [frontend]}\n"
    )
    root = Path(__file__).resolve().parents[2]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from slate.cli import main; sys.exit(main())",
            "run",
            "--policy",
            str(root / "examples/policies/shop.yaml"),
            "--prometheus",
            "http://127.0.0.1:1",
            "--endpoints",
            str(root / "examples/xds/endpoints.yaml"),
            "--xds-port",
            "0",
            "--tls-cert",
            str(certs / "server.crt"),
            "--tls-key",
            str(certs / "server.key"),
            "--tls-client-ca",
            str(certs / "ca.crt"),
            "--identity-table",
            str(table),
            "--metrics-port",
            str(metrics_port),
            "--metrics-tls-cert",
            str(certs / "server.crt"),
            "--metrics-tls-key",
            str(certs / "server.key"),
            "--metrics-tls-client-ca",
            str(certs / "ca.crt"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"xDS on 127\.0\.0\.1:(\d+)", line)
        assert found, (line, proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
        port = int(found.group(1))

        async def scenario() -> None:
            got = await ask(port, client_creds(certs, "frontend"))
            assert isinstance(got, bytes) and "cart" in parse_sotw(got)[1]
            assert await ask(port, client_creds(certs, None)) == grpc.StatusCode.UNAVAILABLE
            denied = grpc.StatusCode.PERMISSION_DENIED
            assert await ask(port, client_creds(certs, "cartsa"), "cart") == denied

        run(scenario())
        # /metrics over HTTPS for a client with a certificate: the loop's and the xDS series.
        url = f"https://127.0.0.1:{metrics_port}/metrics"
        assert https_get(url, certs, "frontend") == 200
        assert https_get(url, certs, None) != 200
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def https_get(url: str, certs: Path, who: str | None, ca: str = "ca") -> int | str:
    """GET over HTTPS trusting `ca`, with `who`'s client certificate: the status, or the error."""
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(certs / f"{ca}.crt"))
    if who is not None:
        ctx.load_cert_chain(certs / f"{who}.crt", certs / f"{who}.key")
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return int(r.status)
    except (urllib.error.URLError, ssl.SSLError, ConnectionError) as e:
        return type(e).__name__


def test_metrics_port_serves_https_and_requires_client_certificates(certs: Path) -> None:
    """/metrics and /healthz over HTTPS; with a client CA, only clients it signed; a client that
    opens a connection and never handshakes does not block the others."""
    import socket
    import urllib.request

    from slate.xds.metrics import serve_http
    from slate.xds.security import https_context

    metrics = XdsMetrics()
    tls = https_context(certs / "server.crt", certs / "server.key")
    httpd, _t = serve_http(metrics.registry, 0, tls=tls)
    try:
        port = httpd.server_port
        assert https_get(f"https://127.0.0.1:{port}/metrics", certs, None) == 200
        with pytest.raises(Exception):  # noqa: B017 - plaintext gets no HTTP answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        httpd.shutdown()

    mtls = https_context(certs / "server.crt", certs / "server.key", certs / "ca.crt")
    httpd, _t = serve_http(metrics.registry, 0, tls=mtls)
    try:
        port = httpd.server_port
        stalled = socket.create_connection(("127.0.0.1", port))  # never says a word
        try:
            assert https_get(f"https://127.0.0.1:{port}/healthz", certs, "frontend") == 200
            assert https_get(f"https://127.0.0.1:{port}/metrics", certs, None) != 200
        finally:
            stalled.close()
    finally:
        httpd.shutdown()


def test_a_certificate_that_does_not_match_its_key_is_named(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            "--policy",
            "p.yaml",
            "--metrics-port",
            "0",
            "--metrics-tls-cert",
            str(certs / "server.crt"),
            "--metrics-tls-key",
            str(certs / "frontend.key"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--metrics-tls-cert" in err, err


def test_metrics_port_follows_rotated_certificates(certs: Path, tmp_path: Path) -> None:
    """HttpsCredentials: each new connection gets the current files' context. A new server
    certificate (from another CA) and a new client CA apply without a restart, the replaced CA
    stops being trusted, and a half-written rotation keeps the last good files (counted)."""
    import os

    from slate.xds.metrics import serve_http
    from slate.xds.security import HttpsCredentials

    for name in ("ca", "ca2", "frontend"):
        for ext in ("crt", "key"):
            shutil.copy(certs / f"{name}.{ext}", tmp_path / f"{name}.{ext}")
    make_cert(tmp_path, "frontend2", "URI:spiffe://cluster.local/ns/shop/sa/frontend", ca="ca2")

    def put(name: str, data: bytes) -> None:  # as a Secret volume rotates: a new file, renamed
        (tmp_path / f"{name}.new").write_bytes(data)
        os.replace(tmp_path / f"{name}.new", tmp_path / name)

    put("tls.crt", (certs / "server.crt").read_bytes())
    put("tls.key", (certs / "server.key").read_bytes())
    put("client-ca.crt", (certs / "ca.crt").read_bytes())
    metrics = XdsMetrics()
    creds = HttpsCredentials(
        tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "client-ca.crt", metrics=metrics
    )
    httpd, _t = serve_http(metrics.registry, 0, tls=creds)
    url = f"https://127.0.0.1:{httpd.server_port}/healthz"
    try:
        assert https_get(url, tmp_path, "frontend") == 200
        assert https_get(url, tmp_path, "frontend2") != 200  # ca2 does not sign clients yet

        # The server certificate rotates to one that ca2 signed.
        put("tls.crt", (certs / "server2.crt").read_bytes())
        put("tls.key", (certs / "server2.key").read_bytes())
        assert https_get(url, tmp_path, "frontend", ca="ca2") == 200
        assert https_get(url, tmp_path, "frontend", ca="ca") != 200

        # A rotation caught half written: the last good context stays, and it is counted.
        put("tls.crt", (certs / "server.crt").read_bytes()[:40])
        assert https_get(url, tmp_path, "frontend", ca="ca2") == 200
        assert _sample(metrics, "slate_xds_reloads_total", file="metrics_tls", result="rejected")
        put("tls.crt", (certs / "server2.crt").read_bytes())

        # The client CA rotates: ca2's clients are let in, ca's are not any more.
        put("client-ca.crt", (certs / "ca2.crt").read_bytes())
        assert https_get(url, tmp_path, "frontend2", ca="ca2") == 200
        assert https_get(url, tmp_path, "frontend", ca="ca2") != 200
        assert _sample(metrics, "slate_xds_reloads_total", file="metrics_tls", result="applied")
    finally:
        httpd.shutdown()


def _sample(metrics: XdsMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got
