"""Where a gRPC client is: features that map this host's memory serve only local clients."""

from __future__ import annotations


def is_local_peer(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:5000", "unix:...") is on this host."""
    return peer.startswith(("unix:", "ipv4:127.", "ipv6:[::1]", "ipv6:%5B::1%5D",
                            "ipv6:[::ffff:127."))


__all__ = ["is_local_peer"]
