"""Where a gRPC client is: features that map this host's memory serve only local clients."""

from __future__ import annotations

from typing import Any


def is_local_peer(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:5000", "unix:...") is on this host."""
    return peer.startswith(("unix:", "ipv4:127.", "ipv6:[::1]", "ipv6:%5B::1%5D",
                            "ipv6:[::ffff:127."))


def client_identity(context: Any) -> str:
    """Who a call is from, for per-client limits: the peer's address without its port.

    A client's connections share it, so opening more channels does not raise its limits.
    With tokens, `auth.identity.client_key` uses the token's name instead.
    """
    peer = str(context.peer() or "")
    if peer.startswith(("ipv4:", "ipv6:")) and ":" in peer[5:]:
        return peer.rsplit(":", 1)[0]
    return peer


__all__ = ["client_identity", "is_local_peer"]
