"""The server's allow-list of `module:attribute` names (architectures) it may import.

One resolver, `augserve.kernels.resolve.AllowList`, serves the model repository, the
replicas, the jobs and `kernels.serialize`; the server's copy raises `ImportRefused` (an
InvalidArgument), so a refused name reaches the client as INVALID_ARGUMENT naming the
field and the allowed prefixes.

Example:
    >>> allow_list(["mycompany.models"]).prefixes
    ('augserve', 'torchvision.models', 'mycompany.models')
"""

from __future__ import annotations

from collections.abc import Iterable

from augserve.kernels.resolve import DEFAULT_PREFIXES, AllowList
from augserve.server.errors import ImportRefused


def allow_list(extra_prefixes: Iterable[str] = ()) -> AllowList:
    """The allow-list of augserve's own prefixes and `extra_prefixes`, raising ImportRefused."""
    return AllowList(DEFAULT_PREFIXES, ImportRefused).with_extra(extra_prefixes)
