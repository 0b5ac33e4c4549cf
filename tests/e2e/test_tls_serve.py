"""`augserve serve` with TLS flags: certificates reread on SIGHUP; the non-loopback refusal."""

from __future__ import annotations

import shutil
import signal
import sys

import grpc

from augserve.clients import InferClient, TlsSettings
from augserve.server.bench.lifecycle import run

from ..certs import Authority, make_authority
from ..waiting import wait_until

SERVE = [sys.executable, "-m", "augserve.server.cli", "serve", "--port", "0",
         "--metrics-port", "0"]


def live(url: str, ca: Authority) -> bool | grpc.StatusCode:
    """ServerLive over TLS trusting only `ca` (a fresh channel: a new handshake)."""
    client = InferClient(url, timeout=10, tls=TlsSettings.from_files(ca.pem.cert))
    with client:
        try:
            return client.is_server_live()
        except grpc.RpcError as error:
            return error.code()


def test_sighup_rereads_the_certificates(serve_process, tmp_path):
    old, new = make_authority(tmp_path, "old"), make_authority(tmp_path, "new")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    first = old.issue("server", server=True)
    shutil.copyfile(first.cert, cert)
    shutil.copyfile(first.key, key)
    (tmp_path / "models").mkdir()
    serve = serve_process(tmp_path / "models", tmp_path, "--tls-cert", str(cert),
                          "--tls-key", str(key))
    assert live(serve.url, old) is True
    assert live(serve.url, new) == grpc.StatusCode.UNAVAILABLE
    second = new.issue("server", server=True)
    shutil.copyfile(second.cert, cert)
    shutil.copyfile(second.key, key)
    assert live(serve.url, new) == grpc.StatusCode.UNAVAILABLE  # not before the SIGHUP
    serve.group.process.send_signal(signal.SIGHUP)
    wait_until(lambda: live(serve.url, new) is True, 30, "a client trusting the new CA")
    assert live(serve.url, old) == grpc.StatusCode.UNAVAILABLE
    assert "TLS certificates reloaded" in serve.log.read_text()
    assert serve.terminate() == 0


def test_a_non_loopback_host_without_tls_and_tokens_is_refused_in_one_line():
    done = run([*SERVE, "--host", "0.0.0.0"], timeout_s=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "augserve serve: refusing to listen on 0.0.0.0 (not loopback) without TLS "
        "(--tls-cert, --tls-key) and tokens (--auth-tokens); give them, or --insecure to "
        "serve anyway")
    assert "augserve listening" not in done.stderr + done.stdout


def test_a_bad_tls_file_is_refused_in_one_line(tmp_path):
    done = run([*SERVE, "--tls-cert", str(tmp_path / "missing.crt"), "--tls-key",
                str(tmp_path / "missing.key")], timeout_s=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"augserve serve: tls_cert {tmp_path / 'missing.crt'} is not a file")


def test_insecure_starts_on_a_non_loopback_host(serve_process, tmp_path):
    (tmp_path / "models").mkdir()
    serve = serve_process(tmp_path / "models", tmp_path, "--host", "0.0.0.0", "--insecure")
    with InferClient(serve.url, timeout=10) as client:
        assert client.is_server_live()
    assert serve.terminate() == 0
