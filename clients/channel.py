"""The one place where augserve's clients open their gRPC channels.

Plaintext without `tls`, TLS (and mutual TLS) with it: every client calls
`open_channel` or `open_aio_channel`, so what a channel carries is decided here once.

Example:
    >>> channel = open_channel("localhost:8001", tls=None)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from augserve.clients.tls import TlsSettings

#: gRPC channel options: ("grpc.max_receive_message_length", 1 << 20) and the like.
ChannelOptions = Sequence[tuple[str, Any]]


def open_channel(target: str, tls: TlsSettings | None = None,
                 options: ChannelOptions = ()) -> grpc.Channel:
    """A blocking channel to `target` ("host:port"): over TLS with `tls`, else plaintext."""
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.credentials(), options=options)


def open_aio_channel(target: str, tls: TlsSettings | None = None,
                     options: ChannelOptions = (),
                     interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
                     ) -> grpc.aio.Channel:
    """The grpc.aio twin of `open_channel`, with `interceptors` (e.g. a bearer token's)."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, tls.credentials(), options=options,
                                   interceptors=interceptors)
