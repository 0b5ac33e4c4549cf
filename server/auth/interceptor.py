"""`AuthInterceptor`: bearer tokens and scopes on every call, the caller's identity, the audit.

For each call it looks up what the method needs (`scopes.METHOD_ACCESS`), reads the
`authorization: Bearer <token>` metadata, and raises `Unauthenticated` (missing,
malformed or unknown token) or `PermissionDenied` (a known token without the
method's scope, named in the message). Those are `AugserveError`s, so it must sit
inside `ErrorMappingInterceptor` (after it in the server's interceptor list), which
turns them into statuses. Without a `TokenStore` every call is let through, but the
caller's `Identity` (its peer address) is still set, and admin RPCs are still audited.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from augserve.server.auth.audit import audit
from augserve.server.auth.identity import Identity, set_identity
from augserve.server.auth.scopes import OPEN, Access, Scope, access_of
from augserve.server.auth.tokens import TokenEntry, TokenStore
from augserve.server.errors import AugserveError, PermissionDenied, Unauthenticated
from augserve.server.handlers import HandlerCache

#: RFC 6750's token68 characters; `secrets.token_urlsafe` tokens are a subset.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_HOW = "send metadata 'authorization: Bearer <token>'"


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of the call's one `authorization: Bearer <token>` entry.

    Raises:
        Unauthenticated: no such entry, more than one, or one not of that form.
    """
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise Unauthenticated(f"no 'authorization' metadata: {_HOW}")
    if len(values) > 1:
        raise Unauthenticated(f"malformed 'authorization' metadata: {len(values)} entries; "
                              f"{_HOW}")
    scheme, _, token = values[0].partition(" ") if isinstance(values[0], str) else ("", "", "")
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        raise Unauthenticated(f"malformed 'authorization' metadata: {_HOW}")
    return token


def check_access(method: str, access: Access | None, entry: TokenEntry | None) -> None:
    """Refuse a token `entry` (None: nothing to check) that may not call `method`.

    Raises:
        PermissionDenied: the token lacks the method's scope (named), or the method
            has no entry in the access table (refused rather than left open).
    """
    if entry is None:
        return
    if access is None:
        raise PermissionDenied(f"{method} has no entry in the access table; refused")
    if isinstance(access, Scope) and access not in entry.scopes:
        raise PermissionDenied(f"token {entry.name!r} lacks the scope {access.value!r}, "
                               f"which {method} needs")


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _kind(handler: grpc.RpcMethodHandler) -> str:
    """Which of the handler's four behavior slots is set."""
    return next(kind for kind in _KINDS if getattr(handler, kind) is not None)


def _status_of(error: BaseException, context: aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(error, AugserveError):
        return error.code
    if isinstance(error, aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


class AuthInterceptor(aio.ServerInterceptor):
    """Checks each call's token against the method's scope; sets `current_identity()`.

    Args:
        store: the known tokens; None turns authentication off (loopback use).
    """

    def __init__(self, store: TokenStore | None) -> None:
        """Check calls against `store` (None: admit every call)."""
        self.store = store
        self._handlers = HandlerCache(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler's behavior in the token check (once per method, then cached)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        behavior = getattr(handler, _kind(handler))
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            return self._check_sync(handler, handler_call_details)
        return self._handlers.get(handler, method)

    def authenticate(self, access: Access | None, metadata: Any,
                     peer: str) -> tuple[Identity, TokenEntry | None]:
        """The caller and its token's entry (None where no token is checked).

        Raises:
            Unauthenticated: a missing, malformed or unknown token.
        """
        if self.store is None or access == OPEN:
            return Identity(None, peer), None
        entry = self.store.authenticate(bearer_token(metadata))
        if entry is None:
            raise Unauthenticated("unknown token")
        return Identity(entry.name, peer), entry

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        access = access_of(method)
        audited = access == Scope.ADMIN
        kind = _kind(handler)
        behavior = getattr(handler, kind)
        if inspect.isasyncgenfunction(behavior):
            wrapped = self._wrap_stream(behavior, method, access, audited)
        else:
            wrapped = self._wrap_unary(behavior, method, access, audited)
        return handler._replace(**{kind: wrapped})

    def _check_sync(self, handler: grpc.RpcMethodHandler,
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        """Check a call to a blocking handler (here: the generated UNIMPLEMENTED defaults).

        Its context is not ours to wrap, so the token is read from the call's details
        and a refused call gets an async handler that raises the refusal.
        """
        method, access = details.method, access_of(details.method)
        identity = Identity(None, "")
        try:
            identity, entry = self.authenticate(access, details.invocation_metadata, "")
            check_access(method, access, entry)
        except AugserveError as error:
            refusal = error
        else:
            return handler
        if access == Scope.ADMIN:
            audit(method, identity, refusal.code)

        async def refuse(request: Any, context: aio.ServicerContext) -> Any:
            raise refusal

        async def refuse_stream(request: Any, context: aio.ServicerContext) -> Any:
            raise refusal
            yield

        return handler._replace(**{_kind(handler): refuse_stream if handler.response_streaming
                                   else refuse})

    def _wrap_unary(self, behavior: Callable[..., Awaitable[Any]], method: str,
                    access: Access | None, audited: bool) -> Callable[..., Any]:
        async def wrapper(request: Any, context: aio.ServicerContext) -> Any:
            identity = Identity(None, context.peer())
            code, response = grpc.StatusCode.OK, None
            try:
                identity, entry = self.authenticate(access, context.invocation_metadata(),
                                                    context.peer())
                check_access(method, access, entry)
                set_identity(identity)
                response = await behavior(request, context)
                return response
            except BaseException as error:
                code = _status_of(error, context)
                raise
            finally:
                if audited:
                    audit(method, identity, code, request, response)

        return wrapper

    def _wrap_stream(self, behavior: Callable[..., Any], method: str,
                     access: Access | None, audited: bool) -> Callable[..., Any]:
        async def wrapper(request: Any, context: aio.ServicerContext) -> Any:
            identity = Identity(None, context.peer())
            code = grpc.StatusCode.OK
            try:
                identity, entry = self.authenticate(access, context.invocation_metadata(),
                                                    context.peer())
                check_access(method, access, entry)
                set_identity(identity)
                async for response in behavior(request, context):
                    yield response
            except BaseException as error:
                code = _status_of(error, context)
                raise
            finally:
                if audited:
                    audit(method, identity, code, request)

        return wrapper

