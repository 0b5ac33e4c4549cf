"""The secured round of `bench infer --tls --auth`: a throwaway CA, server certificate and token.

`make_credentials(folder)` writes a self-signed CA, a server certificate for
127.0.0.1/localhost signed by it (EC P-256, valid for one day) and, with `auth`, a
token file holding one token of scope `infer`. The server is started with
`serve_flags()`; the load generators trust `root_cert` and send `metadata()`.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from augserve.server.auth.cli import TOKEN_BYTES, token_entry

TOKEN_NAME = "bench"


@dataclass(frozen=True)
class Credentials:
    """What the secured server and its load generator need; None where not asked for."""

    root_cert: Path | None
    server_cert: Path | None
    server_key: Path | None
    token_file: Path | None
    token: str | None

    def serve_flags(self) -> list[str]:
        """The `augserve serve` flags that turn TLS and tokens on."""
        flags: list[str] = []
        if self.server_cert is not None and self.server_key is not None:
            flags += ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key)]
        if self.token_file is not None:
            flags += ["--auth-tokens", str(self.token_file)]
        return flags

    def metadata(self) -> list[tuple[str, str]]:
        """The metadata every call carries: the bearer token, if any."""
        return [("authorization", f"Bearer {self.token}")] if self.token else []


def make_credentials(folder: Path, tls: bool, auth: bool) -> Credentials:
    """Write a CA and server certificate (with `tls`) and a token file (with `auth`)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = cert = key = token_file = token = None
    if tls:
        root, cert, key = _write_certificates(folder)
    if auth:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        token_file = folder / "tokens.toml"
        token_file.write_text(token_entry(TOKEN_NAME, token, ["infer"]))
    return Credentials(root, cert, key, token_file, token)


def _write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) as PEM files in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))  # fmt: skip

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "augserve bench CA")])
    ca = (
        builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name,
                server_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return paths
