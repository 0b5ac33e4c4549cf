"""In-flight requests per client identity: one bound over every unary call and stream request.

`InflightInterceptor` holds one `ClientSlots` slot, keyed on `auth.identity.client_key` (the
token's name, else the peer address without its port), for the whole of every unary call;
a call beyond `ServerConfig.max_inflight_per_client` gets RESOURCE_EXHAUSTED naming the
limit before its handler runs. ModelStreamInfer shares the same slots (`InflightInterceptor.slots`),
one per request it has read and not yet answered; a request beyond the limit is answered on
the stream with that error, and the stream goes on. Health, reflection, ServerLive and
ServerReady are exempt, as are server-streaming calls (StreamBatches, Jobs Watch), which
the stream limits bound instead.

It must sit after `AuthInterceptor` in the server's interceptor list, so that the identity
is known when it runs, and inside `ErrorMappingInterceptor`, which turns its refusal into
the status.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from augserve.server.auth.identity import client_key
from augserve.server.drain import DrainGate
from augserve.server.handlers import HandlerCache
from augserve.server.limits import ClientSlots


def inflight_slots(settings: Any) -> ClientSlots:
    """The per-client in-flight slots bound by `settings.max_inflight_per_client`."""
    return ClientSlots(settings, "in-flight request", "max_inflight_per_client")


class InflightInterceptor(aio.ServerInterceptor):
    """Bounds the unary calls one client identity has in flight at once.

    Args:
        slots: the shared slots (`inflight_slots(config)`), also used by ModelStreamInfer.
    """

    def __init__(self, slots: ClientSlots) -> None:
        """Count calls in `slots`."""
        self.slots = slots
        self._handlers = HandlerCache(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap an async unary handler in the slot (once per method, then cached)."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        if DrainGate.is_exempt(handler_call_details.method):
            return handler
        if not inspect.iscoroutinefunction(handler.unary_unary):
            return handler  # a generated UNIMPLEMENTED default: nothing runs
        return self._handlers.get(handler, handler_call_details.method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        behavior, slots = handler.unary_unary, self.slots

        async def wrapper(request: Any, context: aio.ServicerContext) -> Any:
            with slots.hold(client_key(context)):
                return await behavior(request, context)

        return handler._replace(unary_unary=wrapper)


__all__ = ["InflightInterceptor", "inflight_slots"]
