"""Reload on SIGHUP: parts of the server attach a hook, the serving loop runs them all.

The token file and the TLS certificates reload this way, without a restart. Each
hook must keep the old state when its new one is invalid (and log why); a hook that
raises is logged and the others still run.

Example:
    >>> hooks = ReloadHooks()
    >>> hooks.on_sighup(lambda: print("reloaded"))
    >>> hooks.run()
    reloaded
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class ReloadHooks:
    """The callbacks to run on SIGHUP, in the order they were attached."""

    def __init__(self) -> None:
        """Start with no hook."""
        self._hooks: list[Callable[[], object]] = []

    def on_sighup(self, callback: Callable[[], object]) -> None:
        """Run `callback()` (on the event loop's thread) on every SIGHUP."""
        self._hooks.append(callback)

    def run(self) -> None:
        """Run every hook; one that raises is logged and does not stop the others."""
        log.info("SIGHUP: reloading (%d hook(s))", len(self._hooks))
        for hook in self._hooks:
            try:
                hook()
            except Exception:  # a failed reload must not take the server down
                log.exception("reload hook %r failed", hook)
