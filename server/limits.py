"""Going over a configured limit: one `ResourceExhausted` that names the limit and its value.

Every limit is a field of a settings dataclass declared with `options.option`; the message
names the field, its `augserve serve` flag and the value in force, so a client (or its
operator) knows which knob it hit.

Example:
    >>> raise over_limit(settings, "max_images", "images: 2000")  # doctest: +SKIP
    ResourceExhausted: images: 2000 is over max_images (--augment-max-images) = 1024
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from augserve.server.errors import ResourceExhausted
from augserve.server.options import flag_of


def limit_label(settings: Any, name: str) -> str:
    """`name (--flag) = value` for the field `name` of the settings dataclass `settings`."""
    field = next(f for f in dataclasses.fields(settings) if f.name == name)
    flag = flag_of(field)
    return f"{name}{f' ({flag})' if flag else ''} = {getattr(settings, name)}"


def over_limit(settings: Any, name: str, what: str) -> ResourceExhausted:
    """The error for `what` (e.g. "images: 2000") going over `settings.<name>`."""
    return ResourceExhausted(f"{what} is over {limit_label(settings, name)}")


class ClientSlots:
    """Calls held open at once, in all and per client identity, each bounded by a limit.

    `hold` checks and takes a slot in one step (no await between them), so concurrent
    calls cannot all pass the check; the slot is given back when the block ends.
    """

    def __init__(self, settings: Any, what: str, per_client: str,
                 total: str | None = None) -> None:
        """`per_client` and `total` name the fields of `settings` that bound the counts."""
        self.settings, self.what = settings, what
        self.per_client, self.total = per_client, total
        self.held: collections.Counter[str] = collections.Counter()

    @property
    def in_all(self) -> int:
        """Slots held now, over all clients."""
        return sum(self.held.values())

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Hold one slot for `client` for the block, or raise ResourceExhausted first."""
        if self.total is not None and self.in_all >= getattr(self.settings, self.total):
            raise over_limit(self.settings, self.total, f"{self.what} {self.in_all + 1}")
        if self.held[client] >= getattr(self.settings, self.per_client):
            raise over_limit(self.settings, self.per_client,
                             f"{self.what} {self.held[client] + 1} of client {client!r}")
        self.held[client] += 1
        try:
            yield
        finally:
            self.held[client] -= 1
            if not self.held[client]:
                del self.held[client]


__all__ = ["ClientSlots", "limit_label", "over_limit"]
