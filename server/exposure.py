"""Secure defaults: a server reachable from the network must have TLS and tokens.

On loopback (127.0.0.0/8, ::1, "localhost") anything goes. On any other `--host`,
`augserve serve` refuses to start without both TLS and tokens unless `--insecure` is
given, and says why in one line.

Example:
    >>> "without tokens" in refusal("0.0.0.0", has_tls=True, has_tokens=False, insecure=False)
    True
    >>> refusal("127.0.0.1", has_tls=False, has_tokens=False, insecure=False) is None
    True
"""

from __future__ import annotations

import ipaddress


class StartRefused(ValueError):
    """The server will not start as configured; the message says why in one line."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is reachable from this machine only.

    Host names other than "localhost" are not resolved, so they count as not loopback;
    "" and "0.0.0.0" listen on every interface.
    """
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refusal(host: str, *, has_tls: bool, has_tokens: bool, insecure: bool) -> str | None:
    """Why a server on `host` must not start (one line), or None when it may."""
    if insecure or is_loopback(host):
        return None
    missing = [what for what, given in (("TLS (--tls-cert, --tls-key)", has_tls),
                                        ("tokens (--auth-tokens)", has_tokens)) if not given]
    if not missing:
        return None
    needs = " and ".join(missing)
    them = "them" if len(missing) > 1 else "it"
    return (f"refusing to listen on {host or '*'} (not loopback) without {needs}; "
            f"give {them}, or --insecure to serve anyway")
