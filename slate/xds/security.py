"""Transport security and authorization for the xDS port.

**TLS / mTLS**: `server_credentials(TlsFiles)` serves the certificate chain and key from files
and, with a client CA, requires and verifies client certificates (mTLS). The files are checked on
every new connection (a stat each) and re-read when they change, so rotated certificates (cert-
manager, Istio's SDS-written files, a Kubernetes Secret volume) apply without a restart; a
rotation that cannot be read is logged and the previous certificates stay in use.

**Authorization**: with an identity table, a proxy gets only the views its certificate's identity
allows. Identities are Istio's SPIFFE form `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`
(the URI SAN; gRPC reports it as the peer's `peer_spiffe_id`); the table maps (namespace, service
account) to the source services whose views it may read. A stream whose node asks for another
service's view, or whose peer has no (or an unknown, or a foreign trust domain's) identity, ends
with PERMISSION_DENIED; refusals are counted by reason and logged once per peer.

    trust_domain: cluster.local          # optional: other trust domains are refused
    identities:
    - {namespace: shop, service_account: frontend, services: [frontend]}
    - {namespace: istio-system, service_account: ingressgateway, services: [ingress]}
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from slate.logs import kv
from slate.model.errors import InputError
from slate.model.files import load_document
from slate.xds.metrics import XdsMetrics
from slate.xds.protocol import clip
from slate.xds.views import ViewKey

log = logging.getLogger("slate.xds.security")
T = TypeVar("T")

_LOGGED_PEERS = 10_000


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None
    """With it, clients must present a certificate signed by this CA (mTLS)."""


def _read(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(flag, f"cannot read {path}: {e.strerror}") from None
    if b"-----BEGIN" not in data:
        raise InputError(flag, f"{path} is not PEM")
    return data


def _signature(files: TlsFiles) -> tuple[Any, ...]:
    out: list[Any] = []
    for p in (files.cert, files.key, files.client_ca):
        try:
            st = os.stat(p) if p is not None else None
            out.append((st.st_ino, st.st_size, st.st_mtime_ns) if st else None)
        except OSError:
            out.append(None)
    return tuple(out)


def _configuration(files: TlsFiles) -> Any:
    cert = _read(files.cert, "--tls-cert")
    key = _read(files.key, "--tls-key")
    ca = _read(files.client_ca, "--tls-client-ca") if files.client_ca else None
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


class _FollowedFiles(Generic[T]):
    """A value built from TLS files and rebuilt when they change: `refresh()` stats them (a
    stat each, cheap enough for every new connection) and, when they changed, builds again. A
    rotation that cannot be used (a file half written, a key that does not match) is logged as
    `{event}_reload_rejected`, counted under `label`, and the last good value stays; the next
    change is tried again. Both the xDS port and the HTTP ports follow their files this way."""

    def __init__(
        self,
        files: TlsFiles,
        build: Callable[[TlsFiles], T],
        event: str,
        label: str,
        metrics: XdsMetrics | None,
    ) -> None:
        self._files, self._build, self._event, self._label = files, build, event, label
        self._metrics = metrics
        self._lock = threading.Lock()
        self._sig = _signature(files)
        self.value = build(files)  # InputError naming the flag at start-up

    def refresh(self) -> bool:
        """True when the files changed and `value` was rebuilt from them."""
        sig = _signature(self._files)
        if sig == self._sig:
            return False
        with self._lock:
            if sig == self._sig:
                return False
            self._sig = sig
            try:
                value = self._build(self._files)
            except Exception as e:  # any unusable rotation: the last good stays
                log.warning("%s", kv(f"{self._event}_reload_rejected", reason=str(e)))
                if self._metrics is not None:
                    self._metrics.reload_rejected(self._label)
                return False
            self.value = value
            log.info("%s", kv(f"{self._event}_reloaded", cert=self._files.cert))
            if self._metrics is not None:
                self._metrics.reload_applied(self._label)
            return True


def server_credentials(
    files: TlsFiles, metrics: XdsMetrics | None = None
) -> grpc.ServerCredentials:
    """TLS (mTLS with a client CA) credentials that follow changes to the files.

    Raises InputError naming the flag if a file cannot be read at start-up."""
    followed = _FollowedFiles(files, _configuration, "tls", "tls", metrics)

    def fetch() -> Any:
        # None: unchanged (or an unusable rotation), keep the current certificates.
        return followed.value if followed.refresh() else None

    return grpc.dynamic_ssl_server_credentials(
        followed.value, fetch, require_client_authentication=files.client_ca is not None
    )


def https_context(
    cert: Path, key: Path, client_ca: Path | None = None, flag: str = "--metrics-tls"
) -> ssl.SSLContext:
    """A server SSLContext for the HTTP ports (/metrics, /healthz): TLS 1.2+, and with
    `client_ca` only clients presenting a certificate it signed (mTLS). InputError naming
    `{flag}-cert` / `-key` / `-client-ca` when a file cannot be read or used. Read once: to
    follow rotations, serve `HttpsCredentials` instead."""
    for path, which in ((cert, "cert"), (key, "key"), (client_ca, "client-ca")):
        if path is not None:
            _read(path, f"{flag}-{which}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise InputError(f"{flag}-cert", f"cannot use {cert} with {key}: {e.reason}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as e:
            raise InputError(f"{flag}-client-ca", f"cannot use {client_ca}: {e.reason}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class HttpsCredentials:
    """The HTTP ports' TLS (`https_context`), following the files as the xDS port does
    (`_FollowedFiles`): each new connection gets the context of the current files; a rotation
    that cannot be used is logged and counted (`slate_xds_reloads_total{file="metrics_tls"}` when
    given the metrics) and the previous context stays. A whole new context is built rather than
    certificates loaded into the old one: a client CA that is replaced must stop being trusted,
    and an SSLContext can only add CAs."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        client_ca: Path | None = None,
        flag: str = "--metrics-tls",
        metrics: XdsMetrics | None = None,
    ) -> None:
        def build(f: TlsFiles) -> ssl.SSLContext:
            return https_context(f.cert, f.key, f.client_ca, flag)

        files = TlsFiles(cert, key, client_ca)
        self._followed = _FollowedFiles(files, build, "https_tls", "metrics_tls", metrics)

    def current(self) -> ssl.SSLContext:
        self._followed.refresh()
        return self._followed.value


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def parse_spiffe(uri: str) -> SpiffeId | None:
    """`spiffe://TD/ns/NS/sa/SA` -> SpiffeId; None for anything else."""
    if not uri.startswith("spiffe://"):
        return None
    parts = uri[len("spiffe://") :].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return SpiffeId(parts[0], parts[2], parts[4])


@dataclass(frozen=True)
class IdentityTable:
    services: Mapping[tuple[str, str], frozenset[str]]
    """(namespace, service account) -> source services whose views it may read."""
    trust_domain: str | None = None

    def allowed(self, identity: SpiffeId) -> frozenset[str] | None:
        """The services this identity may read; None if the identity is not trusted at all."""
        if self.trust_domain is not None and identity.trust_domain != self.trust_domain:
            return None
        return self.services.get((identity.namespace, identity.service_account))


def identity_table_from_data(data: Any) -> IdentityTable:
    if not isinstance(data, dict) or not isinstance(data.get("identities"), list):
        raise InputError("identities", "is required and must be a list")
    td = data.get("trust_domain")
    if td is not None and (not isinstance(td, str) or not td):
        raise InputError("trust_domain", "must be a non-empty string")
    table: dict[tuple[str, str], frozenset[str]] = {}
    for i, row in enumerate(data["identities"]):
        path = f"identities[{i}]"
        if not isinstance(row, dict):
            raise InputError(path, "must be {namespace, service_account, services}")
        ns, sa = row.get("namespace"), row.get("service_account")
        for key, value in (("namespace", ns), ("service_account", sa)):
            if not isinstance(value, str) or not value:
                raise InputError(f"{path}.{key}", "must be a non-empty string")
        services = row.get("services")
        if not isinstance(services, list) or not services:
            raise InputError(f"{path}.services", "must be a non-empty list of service names")
        for j, s in enumerate(services):
            if not isinstance(s, str) or not s:
                raise InputError(f"{path}.services[{j}]", "must be a non-empty string")
        key_ = (str(ns), str(sa))
        table[key_] = table.get(key_, frozenset()) | frozenset(services)
    return IdentityTable(table, td)


def load_identity_table(path: str | Path) -> IdentityTable:
    return load_document(path, "identity table", "yaml", identity_table_from_data)


def peer_identities(context: Any) -> list[str]:
    """The SPIFFE IDs (URI SANs) of the peer's verified certificate, if any."""
    try:
        auth = context.auth_context()
    except Exception:
        return []
    raw = auth.get("peer_spiffe_id") or [
        v for v in auth.get("x509_subject_alternative_name", []) if v.startswith(b"spiffe://")
    ]
    return [v.decode("utf-8", "replace") for v in raw]


class Refused(Exception):
    """A stream may not read the view it asked for."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Authorizer:
    """Decides whether a peer may read a view; counts refusals and logs each peer once."""

    def __init__(self, table: IdentityTable, metrics: XdsMetrics | None = None) -> None:
        self.table = table
        self.metrics = metrics
        self._logged: OrderedDict[tuple[str, str], None] = OrderedDict()

    def check(self, identities: Sequence[str], peer: str, view: ViewKey) -> None:
        """Raise `Refused` unless one of the peer's identities may read `view`."""
        reason, message = self._decide(identities, view)
        if reason is None:
            return
        if self.metrics is not None:
            self.metrics.refused.labels(reason).inc()
        who = identities[0] if identities else peer.rsplit(":", 1)[0]
        key = (who[:300], reason)
        if key not in self._logged:
            self._logged[key] = None
            if len(self._logged) > _LOGGED_PEERS:
                self._logged.popitem(last=False)
            log.warning(
                "%s", kv("stream_refused", peer=clip(who), reason=reason, detail=clip(message))
            )
        raise Refused(reason, message)

    def _decide(self, identities: Sequence[str], view: ViewKey) -> tuple[str | None, str]:
        if not identities:
            return "no_identity", "the client certificate carries no SPIFFE ID"
        seen = []
        for uri in identities:
            sid = parse_spiffe(uri)
            if sid is None:
                continue
            services = self.table.allowed(sid)
            if services is None:
                td = self.table.trust_domain
                foreign = td is not None and sid.trust_domain != td
                seen.append("untrusted_domain" if foreign else "unknown_identity")
                continue
            if view.service in services:
                return None, ""
            seen.append("view_not_allowed")
        reason = seen[-1] if seen else "no_identity"
        if reason == "view_not_allowed":
            return reason, f"this identity may not read the views of {view.service!r}"
        if reason == "untrusted_domain":
            return reason, "the client's trust domain is not this mesh's"
        if reason == "unknown_identity":
            return reason, "the client's identity is not in the identity table"
        return reason, "the client certificate carries no SPIFFE ID"
