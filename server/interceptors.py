"""Server interceptors: the one place where domain errors become gRPC statuses.

Servicers raise `augserve.server.errors.AugserveError` subclasses; the
`ErrorMappingInterceptor` aborts the call with the status bound to the class and
the error's message. Any other exception becomes INTERNAL for that call only:
the server keeps running and other calls are untouched. The same wrapper admits
each call through the server's `DrainGate`, so that a draining server answers
UNAVAILABLE instead of dropping calls (one wrapper per call keeps the hot path short).

It also parses the request bytes itself: grpc.aio would parse them before the handler
and answer bytes that are not the RPC's message with UNKNOWN; here they get
INVALID_ARGUMENT naming the method.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from augserve.server.drain import DrainGate
from augserve.server.errors import AugserveError, InvalidArgument
from augserve.server.handlers import HandlerCache

log = logging.getLogger(__name__)


async def _abort_for(error: BaseException, context: aio.ServicerContext, method: str) -> None:
    if isinstance(error, AugserveError):
        await context.abort(error.code, str(error))
    log.exception("unhandled error in %s", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method}: {type(error).__name__}: {error}")


SHUTTING_DOWN = "server is shutting down; retry on another replica"

#: Turns what grpc.aio hands a handler (the raw request bytes, or an iterator of them)
#: into what the servicer expects (the message, or an iterator of messages).
Decode = Callable[[Any, aio.ServicerContext], Any]


def _keep(request_or_iterator: Any, context: aio.ServicerContext) -> Any:
    return request_or_iterator


def request_decoder(handler: grpc.RpcMethodHandler, method: str) -> Decode | None:
    """What parses `handler`'s requests, raising InvalidArgument; None: nothing to parse.

    A unary request is parsed at once; a request stream message by message, a bad one
    aborting the call with INVALID_ARGUMENT.
    """
    deserialize = handler.request_deserializer
    if deserialize is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as error:  # protobuf's DecodeError, or a custom parser's error
            raise InvalidArgument(f"request: the bytes do not parse as the request message "
                                  f"of {method} ({type(error).__name__}: {error})") from error

    if not handler.request_streaming:
        return lambda raw, context: parse(raw)

    async def parse_stream(iterator: Any, context: aio.ServicerContext) -> Any:
        async for raw in iterator:
            try:
                message = parse(raw)
            except InvalidArgument as error:
                await context.abort(error.code, str(error))
            yield message

    return parse_stream


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], method: str, gate: DrainGate, decode: Decode
) -> Callable[..., Any]:
    async def wrapper(request_or_iterator: Any, context: aio.ServicerContext) -> Any:
        if not gate.admit():
            await context.abort(grpc.StatusCode.UNAVAILABLE, gate.refusal or SHUTTING_DOWN)
        try:
            return await behavior(decode(request_or_iterator, context), context)
        except aio.AbortError:
            raise
        except Exception as error:  # mapped to a status for this call only
            await _abort_for(error, context, method)
        finally:
            gate.release()

    return wrapper


def _wrap_stream(behavior: Callable[..., Any], method: str, gate: DrainGate, decode: Decode
                 ) -> Callable[..., Any]:
    async def wrapper(request_or_iterator: Any, context: aio.ServicerContext) -> Any:
        if not gate.admit():
            await context.abort(grpc.StatusCode.UNAVAILABLE, gate.refusal or SHUTTING_DOWN)
        try:
            async for response in behavior(decode(request_or_iterator, context), context):
                yield response
        except aio.AbortError:
            raise
        except Exception as error:  # mapped to a status for this call only
            await _abort_for(error, context, method)
        finally:
            gate.release()

    return wrapper


def _wrap_plain(behavior: Callable[..., Any], decode: Decode) -> Callable[..., Any]:
    """A plain (not async) unary behavior: only its request is parsed here.

    Such a behavior is a generated stub's UNIMPLEMENTED one; what it raises reaches grpc
    as before.
    """
    async def wrapper(raw: Any, context: aio.ServicerContext) -> Any:
        try:
            request = decode(raw, context)
        except AugserveError as error:
            await context.abort(error.code, str(error))
        return behavior(request, context)

    return wrapper


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps `AugserveError` to its status code and anything else to INTERNAL.

    Args:
        gate: the server's drain gate; a private, never-closed one by default.
    """

    def __init__(self, gate: DrainGate | None = None) -> None:
        """Bind the interceptor to `gate`."""
        self.gate = gate or DrainGate()
        self._exempt_gate = DrainGate()  # never closed: probes pass while draining
        self._handlers = HandlerCache(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler's behavior so that its exceptions become statuses."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._handlers.get(handler, handler_call_details.method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        gate = self._exempt_gate if DrainGate.is_exempt(method) else self.gate
        decode = request_decoder(handler, method)
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is None:
                continue
            if inspect.isasyncgenfunction(behavior):
                wrapped = _wrap_stream(behavior, method, gate, decode or _keep)
            elif inspect.iscoroutinefunction(behavior):
                wrapped = _wrap_unary(behavior, method, gate, decode or _keep)
            elif kind == "unary_unary" and decode is not None:
                wrapped = _wrap_plain(behavior, decode)
            else:
                return handler
            # the wrapper parses the request bytes (see `request_decoder`)
            return handler._replace(**{kind: wrapped, "request_deserializer": None})
        return handler
