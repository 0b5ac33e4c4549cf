"""Bearer tokens on a channel: every call carries `authorization: Bearer <token>`.

A server started with `--auth-tokens` refuses calls without a known token
(UNAUTHENTICATED) or without the method's scope (PERMISSION_DENIED). The clients
take `token=` and route their channel through `with_token`; with tritonclient,
pass `headers={"authorization": "Bearer " + token}` to each call instead.

Example:
    >>> channel = with_token(grpc.insecure_channel("localhost:8001"), "s3cret")
    >>> bearer_metadata("s3cret")
    (('authorization', 'Bearer s3cret'),)
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that presents `token`."""
    return (("authorization", f"Bearer {token}"),)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")),
    grpc.ClientCallDetails,
):
    """A call's details with the token's metadata added."""


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the token's metadata to every call of a blocking channel."""

    def __init__(self, token: str) -> None:
        self._metadata = bearer_metadata(token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = (*(details.metadata or ()), *self._metadata)
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, getattr(details, "compression", None))

    def _intercept(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                   request: Any) -> Any:
        return continuation(self._details(details), request)

    intercept_unary_unary = _intercept
    intercept_unary_stream = _intercept
    intercept_stream_unary = _intercept
    intercept_stream_stream = _intercept


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """`channel` whose calls all present `token`; `channel` itself when `token` is None."""
    if token is None:
        return channel
    return grpc.intercept_channel(channel, _BearerInterceptor(token))


class _AioBearerInterceptor(aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor,
                            aio.StreamUnaryClientInterceptor, aio.StreamStreamClientInterceptor):
    """Adds the token's metadata to every call of an asyncio channel."""

    def __init__(self, token: str) -> None:
        self._metadata = bearer_metadata(token)

    async def _intercept(self, continuation: Callable[..., Any],
                         details: aio.ClientCallDetails, request: Any) -> Any:
        metadata = aio.Metadata(*(details.metadata or ()), *self._metadata)
        return await continuation(details._replace(metadata=metadata), request)

    intercept_unary_unary = _intercept
    intercept_unary_stream = _intercept
    intercept_stream_unary = _intercept
    intercept_stream_stream = _intercept


def aio_interceptors(token: str | None) -> list[aio.ClientInterceptor]:
    """The interceptors of an asyncio channel whose calls present `token` (none for None)."""
    return [] if token is None else [_AioBearerInterceptor(token)]
