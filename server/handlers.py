"""Wrapped gRPC method handlers, built once per method and then reused.

Both server interceptors (error mapping, authentication) wrap each method's handler. Building
the wrapper on the method's first call and keeping it makes the per-call cost one dict lookup
instead of new closures and signature checks.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

#: Builds the wrapper of a method's handler: (handler, full method name) -> wrapped handler.
Wrap = Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]


class HandlerCache:
    """Each method's wrapped handler, rebuilt only when the server hands out a new handler."""

    def __init__(self, wrap: Wrap) -> None:
        """Wrap handlers with `wrap`."""
        self._wrap = wrap
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method`, wrapped (built on first use, then cached)."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
