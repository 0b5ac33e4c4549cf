"""Secure defaults: beyond loopback, no start without TLS and tokens unless `insecure`."""

from __future__ import annotations

import pytest

from augserve.server.app import start_server
from augserve.server.config import ServerConfig
from augserve.server.exposure import StartRefused, is_loopback, refusal

from ..certs import make_authority


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost",
                                  "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.1.2.3", "192.168.0.1",
                                  "server.example", "localhost.example"])
def test_hosts_beyond_loopback(host):
    assert not is_loopback(host)


def test_loopback_needs_neither_tls_nor_tokens():
    assert refusal("127.0.0.1", has_tls=False, has_tokens=False, insecure=False) is None


def test_beyond_loopback_the_refusal_names_what_is_missing_in_one_line():
    assert refusal("0.0.0.0", has_tls=False, has_tokens=False, insecure=False) == (
        "refusing to listen on 0.0.0.0 (not loopback) without TLS (--tls-cert, --tls-key) "
        "and tokens (--auth-tokens); give them, or --insecure to serve anyway")
    assert refusal("10.1.2.3", has_tls=True, has_tokens=False, insecure=False) == (
        "refusing to listen on 10.1.2.3 (not loopback) without tokens (--auth-tokens); "
        "give it, or --insecure to serve anyway")
    only_tokens = refusal("10.1.2.3", has_tls=False, has_tokens=True, insecure=False)
    assert only_tokens is not None and "without TLS (--tls-cert, --tls-key);" in only_tokens


def test_tls_and_tokens_or_insecure_may_start_beyond_loopback():
    assert refusal("0.0.0.0", has_tls=True, has_tokens=True, insecure=False) is None
    assert refusal("0.0.0.0", has_tls=False, has_tokens=False, insecure=True) is None


async def test_start_server_refuses_before_anything_starts(tmp_path):
    ca = make_authority(tmp_path)
    server = ca.issue("server", server=True)
    config = ServerConfig(host="0.0.0.0", port=0, metrics_port=0, tls_cert=server.cert,
                          tls_key=server.key)
    with pytest.raises(StartRefused, match=r"without tokens \(--auth-tokens\)"):
        await start_server(config)  # with Ray not running, anything past the check would start it
