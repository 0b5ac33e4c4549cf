"""ServerConfig's TLS fields: flags, pairs that go together, files that must exist."""

from __future__ import annotations

import pytest

from augserve.server.cli import build_parser
from augserve.server.config import ServerConfig, config_from_args
from augserve.server.tls import CertificateFiles


def test_tls_flags_land_in_the_config(tmp_path):
    for name in ("server.crt", "server.key", "clients.crt"):
        (tmp_path / name).write_text("pem\n")
    args = build_parser().parse_args([
        "serve", "--tls-cert", str(tmp_path / "server.crt"), "--tls-key",
        str(tmp_path / "server.key"), "--tls-client-ca", str(tmp_path / "clients.crt"),
        "--insecure"])
    config = config_from_args(args)
    assert config.insecure
    assert config.certificate_files() == CertificateFiles(
        tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "clients.crt")


def test_plaintext_by_default():
    config = ServerConfig().validated()
    assert config.certificate_files() is None
    assert not config.insecure


@pytest.mark.parametrize(("fields", "message"), [
    ({"tls_cert": "server.crt"}, "tls_cert and tls_key go together"),
    ({"tls_key": "server.key"}, "tls_cert and tls_key go together"),
    ({"tls_client_ca": "clients.crt"}, "tls_client_ca needs tls_cert and tls_key"),
    ({"tls_cert": "server.crt", "tls_key": "missing.key"}, "tls_key .*missing.key is not a file"),
    ({"tls_cert": "server.crt", "tls_key": "server.key", "tls_client_ca": "missing.crt"},
     "tls_client_ca .*missing.crt is not a file"),
])
def test_bad_tls_fields_are_named(tmp_path, fields, message):
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_text("pem\n")
    paths = {key: tmp_path / value for key, value in fields.items()}
    with pytest.raises(ValueError, match=message):
        ServerConfig(**paths).validated()
