"""Who is calling: set by `AuthInterceptor` for each call, read by handlers.

Handlers that bound work per client (streams, in-flight requests) key it on
`current_identity().key`: the token's name where the call carried a known token,
else the peer address.

Example:
    >>> Identity(token_name="trainer-1", peer="ipv4:10.0.0.7:51234").key
    'trainer-1'
    >>> Identity(token_name=None, peer="ipv4:10.0.0.7:51234").key
    'ipv4:10.0.0.7:51234'
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from augserve.server.peers import client_identity


@dataclass(frozen=True)
class Identity:
    """The caller of one RPC: its token's name (None without one) and its peer address."""

    token_name: str | None
    peer: str

    @property
    def key(self) -> str:
        """The name limits and logs use: the token's name, else the peer address."""
        return self.token_name if self.token_name is not None else self.peer


_CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "augserve_identity", default=None
)


def current_identity() -> Identity | None:
    """The identity of the RPC this code runs in; None outside an intercepted call."""
    return _CURRENT.get()


def set_identity(identity: Identity) -> None:
    """Make `identity` current for the rest of this RPC.

    grpc.aio runs each RPC in a task of its own, whose context dies with it, so the
    identity needs no reset; tasks the handler starts inherit it.
    """
    _CURRENT.set(identity)


def client_key(context: Any) -> str:
    """Who a call is from, for per-client limits: its token's name, else its peer's address.

    The address leaves out the port (`peers.client_identity`), so a client's connections share
    one key and opening more channels does not raise its limits.
    """
    identity = current_identity()
    if identity is not None and identity.token_name is not None:
        return identity.token_name
    return client_identity(context)
