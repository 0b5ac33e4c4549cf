"""TLS for the gRPC port and the metrics endpoint, from PEM files that reload on SIGHUP.

`ServerTls` reads the certificate, its key and (for mutual TLS) the client CA once at
start, checking that they parse and that the key matches the certificate. The gRPC
port gets dynamic credentials: gRPC asks `ServerTls` for a new configuration at each
new connection, and gets one only after `reload()` read the files again. The metrics
endpoint (prometheus-client's HTTP server) serves the same certificate; each of its
handshakes switches to the context of the last good load. A reload that fails (a
missing file, a key that does not match) is logged and changes nothing: the server
goes on with the certificates it had.

Example:
    >>> tls = ServerTls(CertificateFiles(Path("server.crt"), Path("server.key")))  # doctest: +SKIP
    >>> port = server.add_secure_port("0.0.0.0:8001", tls.grpc_credentials())  # doctest: +SKIP
    >>> tls.reload()  # after the files were replaced  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM files the server's TLS is read from.

    Attributes:
        cert: the server's certificate chain (leaf first).
        key: its private key.
        client_ca: CA certificates that sign the clients' certificates; set, the server
            runs mutual TLS and refuses clients without one at the handshake.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by `client_ca`."""
        return self.client_ca is not None


@dataclass(frozen=True)
class _Loaded:
    """One good read of the files, as gRPC and as Python's ssl module take them."""

    grpc_config: grpc.ServerCertificateConfiguration
    ssl_context: ssl.SSLContext


def _load(files: CertificateFiles) -> _Loaded:
    """Read and check the files; raise ValueError naming the file that is missing or bad."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        cert, key = files.cert.read_bytes(), files.key.read_bytes()
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"tls_cert {files.cert} / tls_key {files.key}: {error}") from error
    client_ca = None
    if files.client_ca is not None:
        try:
            client_ca = files.client_ca.read_bytes()
            context.load_verify_locations(cadata=client_ca.decode("ascii"))
        except (OSError, ssl.SSLError, UnicodeDecodeError) as error:
            raise ValueError(f"tls_client_ca {files.client_ca}: {error}") from error
        context.verify_mode = ssl.CERT_REQUIRED
    config = grpc.ssl_server_certificate_configuration([(key, cert)], client_ca)
    return _Loaded(config, context)


class ServerTls:
    """The server's certificates, for gRPC and for the metrics endpoint; `reload()` rereads them.

    Args:
        files: where the certificate, key and client CA are.

    Raises:
        ValueError: a file is missing or unreadable, or the key does not match the certificate.
    """

    def __init__(self, files: CertificateFiles) -> None:
        self.files = files
        self._current = _load(files)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for `server.add_secure_port` that pick up each successful reload."""
        return grpc.dynamic_ssl_server_credentials(
            self._current.grpc_config, self._fetch,
            require_client_authentication=self.files.mutual)  # fmt: skip

    def reload(self) -> bool:
        """Read the files again; new connections get them. False (and logged) if they are bad."""
        try:
            loaded = _load(self.files)
        except ValueError as error:
            log.error("TLS reload failed, keeping the certificates in use: %s", error)
            return False
        with self._lock:
            self._current, self._pending = loaded, loaded.grpc_config
        log.info("TLS certificates reloaded from %s", self.files.cert)
        return True

    def start_metrics(self, port: int, host: str) -> WSGIServer:
        """Serve /metrics over HTTPS with these certificates; returns the running HTTP server.

        Under mutual TLS the scraper needs a client certificate too. `port` 0 binds a free
        port (the returned server's `server_port`).
        """
        files = self.files
        server, _ = prometheus_client.start_http_server(
            port, addr=host, certfile=str(files.cert), keyfile=str(files.key),
            client_cafile=None if files.client_ca is None else str(files.client_ca),
            client_auth_required=files.mutual)  # fmt: skip
        listener = server.socket
        if not isinstance(listener, ssl.SSLSocket):
            server.shutdown()
            raise RuntimeError("prometheus-client served /metrics without TLS")
        # Called at every ClientHello, with or without a server name: the handshake goes on
        # with the context of the latest good load.
        listener.context.sni_callback = self._pick_metrics_context
        return server

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # gRPC calls this from its own threads at each new connection; None: unchanged.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def _pick_metrics_context(self, connection: ssl.SSLSocket | ssl.SSLObject,
                              server_name: str | None, context: ssl.SSLContext) -> None:
        connection.context = self._current.ssl_context
