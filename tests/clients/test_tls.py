"""TlsSettings: PEM bytes or files, a client certificate only with its key."""

from __future__ import annotations

import grpc
import pytest

from augserve.clients.tls import TlsSettings


def test_from_files_reads_the_pem_bytes(tmp_path):
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_bytes(f"pem of {name}\n".encode())
    settings = TlsSettings.from_files(tmp_path / "ca.crt", str(tmp_path / "client.crt"),
                                      tmp_path / "client.key")
    assert settings == TlsSettings(b"pem of ca.crt\n", b"pem of client.crt\n",
                                   b"pem of client.key\n")
    assert TlsSettings.from_files() == TlsSettings()


def test_a_client_certificate_needs_its_key():
    with pytest.raises(ValueError, match="certificate_chain and private_key go together"):
        TlsSettings(certificate_chain=b"pem")
    with pytest.raises(ValueError, match="certificate_chain and private_key go together"):
        TlsSettings(private_key=b"pem")


def test_credentials_are_grpc_channel_credentials():
    assert isinstance(TlsSettings().credentials(), grpc.ChannelCredentials)
