"""`TlsSettings`: how a client checks the server, and the certificate it shows under mTLS.

Every augserve client (`InferClient`, `AsyncInferClient`, `AugmentClient`,
`RemoteLoader`, `JobClient`) takes `tls=TlsSettings(...)`; without it they speak
plaintext. `TlsSettings()` with nothing set trusts the system's CA store.

Example:
    >>> tls = TlsSettings.from_files(root_certificates="ca.crt")  # doctest: +SKIP
    >>> with InferClient("server.example:8001", tls=tls) as client:  # doctest: +SKIP
    ...     client.server_ready()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsSettings:
    """PEM bytes for a TLS channel, as `grpc.ssl_channel_credentials` takes them.

    Attributes:
        root_certificates: the CA certificates the server's certificate must chain to
            (None: the system's CA store).
        certificate_chain: this client's certificate, for a server that runs mutual TLS.
        private_key: the key of `certificate_chain`.
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("certificate_chain and private_key go together: give both or "
                             "neither")

    @classmethod
    def from_files(
        cls,
        root_certificates: str | Path | None = None,
        certificate_chain: str | Path | None = None,
        private_key: str | Path | None = None,
    ) -> TlsSettings:
        """Settings read from PEM files (each argument a path, or None).

        Raises:
            OSError: a file cannot be read.
            ValueError: only one of `certificate_chain` and `private_key` is given.
        """

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(read(root_certificates), read(certificate_chain), read(private_key))

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials these settings describe."""
        return grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain)
