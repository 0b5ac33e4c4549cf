"""ServerTls: checked PEM files, TLS and mutual TLS on a grpc.aio port and on /metrics, reload."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import urllib.error
import urllib.request

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from augserve.server.tls import CertificateFiles, ServerTls

from ..certs import Authority, Pem, make_authority

# A channel of its own per check: a new connection, so a new handshake with the server.
OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture
def authorities(tmp_path):
    return make_authority(tmp_path, "old"), make_authority(tmp_path, "new")


def install(pem: Pem, files: CertificateFiles) -> None:
    """Put `pem` where the server reads its certificate, as an operator rotating it would."""
    shutil.copyfile(pem.cert, files.cert)
    shutil.copyfile(pem.key, files.key)


def served_files(tmp_path, authority: Authority, client_ca: Authority | None = None):
    files = CertificateFiles(tmp_path / "server.crt", tmp_path / "server.key",
                             None if client_ca is None else client_ca.pem.cert)
    install(authority.issue("server", server=True), files)
    return files


async def health_status(port: int, ca: Authority, client: Pem | None = None):
    """The health check's status over TLS trusting only `ca`, or the RPC's error code."""
    credentials = grpc.ssl_channel_credentials(
        ca.pem.cert_bytes, client and client.key_bytes, client and client.cert_bytes)
    async with aio.secure_channel(f"127.0.0.1:{port}", credentials, options=OPTIONS) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10)
        except aio.AioRpcError as error:
            return error.code()
        return reply.status


@pytest.fixture
async def grpc_port():
    """Start a health-only grpc.aio server on loopback with given TLS; yields its port."""
    servers = []

    async def start(tls: ServerTls) -> int:
        server = aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_secure_port("127.0.0.1:0", tls.grpc_credentials())
        await server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        await server.stop(None)


SERVING = health_pb2.HealthCheckResponse.SERVING


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path, authorities):
    old, new = authorities
    files = CertificateFiles(old.issue("server", server=True).cert,
                             new.issue("server", server=True).key)
    with pytest.raises(ValueError, match=r"tls_cert .* / tls_key .*KEY_VALUES_MISMATCH"):
        ServerTls(files)


def test_a_client_ca_that_is_no_certificate_is_refused(tmp_path, authorities):
    old, _ = authorities
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    files = served_files(tmp_path, old)
    files = CertificateFiles(files.cert, files.key, tmp_path / "junk.crt")
    with pytest.raises(ValueError, match=r"tls_client_ca .*junk\.crt"):
        ServerTls(files)


async def test_tls_port_serves_the_certificate_and_refuses_plaintext(tmp_path, authorities,
                                                                     grpc_port):
    old, new = authorities
    port = await grpc_port(ServerTls(served_files(tmp_path, old)))
    assert await health_status(port, old) == SERVING
    assert await health_status(port, new) == grpc.StatusCode.UNAVAILABLE
    async with aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
        with pytest.raises(aio.AioRpcError) as error:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=10)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_clients_without_a_certificate_of_the_client_ca(
        tmp_path, authorities, grpc_port):
    old, new = authorities
    port = await grpc_port(ServerTls(served_files(tmp_path, old, client_ca=old)))
    assert await health_status(port, old, old.issue("trainer", server=False)) == SERVING
    assert await health_status(port, old) == grpc.StatusCode.UNAVAILABLE
    stranger = new.issue("stranger", server=False)
    assert await health_status(port, old, stranger) == grpc.StatusCode.UNAVAILABLE


async def test_reload_serves_the_new_certificate_to_new_connections(tmp_path, authorities,
                                                                   grpc_port):
    old, new = authorities
    files = served_files(tmp_path, old)
    tls = ServerTls(files)
    port = await grpc_port(tls)
    assert await health_status(port, new) == grpc.StatusCode.UNAVAILABLE
    install(new.issue("server", server=True), files)
    assert tls.reload()
    assert await health_status(port, new) == SERVING
    assert await health_status(port, old) == grpc.StatusCode.UNAVAILABLE


async def test_a_reload_of_bad_files_keeps_the_certificate_in_use(tmp_path, authorities,
                                                                 grpc_port, caplog):
    old, new = authorities
    files = served_files(tmp_path, old)
    tls = ServerTls(files)
    port = await grpc_port(tls)
    shutil.copyfile(new.issue("server", server=True).key, files.key)  # no longer the cert's
    assert not tls.reload()
    assert "TLS reload failed, keeping the certificates in use" in caplog.text
    assert await health_status(port, old) == SERVING


def fetch_metrics(port: int, ca: Authority, client: Pem | None = None) -> str:
    context = ssl.create_default_context(cafile=ca.pem.cert)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=context,
                                timeout=10) as reply:
        return reply.read().decode()


@pytest.fixture
def metrics_server():
    servers = []

    def start(tls: ServerTls):
        servers.append(tls.start_metrics(0, "127.0.0.1"))
        return servers[-1].server_port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


async def test_metrics_over_https_with_the_same_certificate_reloaded(tmp_path, authorities,
                                                                    metrics_server):
    old, new = authorities
    files = served_files(tmp_path, old)
    tls = ServerTls(files)
    port = metrics_server(tls)
    assert "python_info" in await asyncio.to_thread(fetch_metrics, port, old)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.to_thread(fetch_metrics, port, new)
    install(new.issue("server", server=True), files)
    assert tls.reload()
    assert "python_info" in await asyncio.to_thread(fetch_metrics, port, new)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.to_thread(fetch_metrics, port, old)


async def test_metrics_under_mutual_tls_need_a_client_certificate(tmp_path, authorities,
                                                                metrics_server):
    old, _ = authorities
    port = metrics_server(ServerTls(served_files(tmp_path, old, client_ca=old)))
    scraper = old.issue("prometheus", server=False)
    assert "python_info" in await asyncio.to_thread(fetch_metrics, port, old, scraper)
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        await asyncio.to_thread(fetch_metrics, port, old)
