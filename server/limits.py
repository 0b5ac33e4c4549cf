"""Going over a configured limit: one `ResourceExhausted` that names the limit and its value.

Every limit is a field of a settings dataclass declared with `options.option`; the message
names the field, its `augserve serve` flag and the value in force, so a client (or its
operator) knows which knob it hit.

Example:
    >>> raise over_limit(settings, "max_images", "images: 2000")  # doctest: +SKIP
    ResourceExhausted: images: 2000 is over max_images (--augment-max-images) = 1024
"""

from __future__ import annotations

import dataclasses
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


__all__ = ["limit_label", "over_limit"]
