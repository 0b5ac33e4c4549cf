"""Names that arrive in requests, and paths that must stay inside a root folder.

One rule for every name a client sends that becomes (part of) a file path or a key: a model,
a version, a job's output model, a shared-memory key. And one helper, `inside`, through which
every such path is resolved (symlinks included) and checked before it is opened or written.

Example:
    >>> check_name("digits_v2", "model_name")
    'digits_v2'
    >>> inside("/models", "digits", "config.json")
    PosixPath('/models/digits/config.json')
"""

from __future__ import annotations

import re
from pathlib import Path

from augserve.server.errors import InvalidArgument

MAX_NAME_LENGTH = 128
NAME_RULE = f"letters, digits, '_', '.' and '-', not starting with '.', '_' or '-', " \
            f"at most {MAX_NAME_LENGTH} characters"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_VERSION = re.compile(r"[0-9]{1,18}")


def _shown(value: str) -> str:
    """`value` as an error message shows it: repr'd, cut to 40 characters."""
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} characters)"


def is_name(value: str) -> bool:
    """Whether `value` follows the name rule (`NAME_RULE`)."""
    return len(value) <= MAX_NAME_LENGTH and _NAME.fullmatch(value) is not None


def check_name(value: str, field: str) -> str:
    """Return `value` if it is a valid name; else raise InvalidArgument naming `field`."""
    if not is_name(value):
        raise InvalidArgument(f"{field}: {_shown(value)} is not a valid name ({NAME_RULE})")
    return value


def check_version(value: str, field: str) -> str:
    """Return `value` if it is "" (any version) or a version number; else InvalidArgument."""
    if value and _VERSION.fullmatch(value) is None:
        raise InvalidArgument(f"{field}: {_shown(value)} is not a version number")
    return value


def inside(root: Path | str, *parts: str, field: str = "path") -> Path:
    """`root / parts`, resolved (symlinks followed), if it lies inside `root`.

    Parts that do not exist yet are allowed (a file about to be written); whatever part of
    the path exists is resolved through its symlinks.

    Raises:
        InvalidArgument: the resolved path leaves `root` (`..`, an absolute part, a symlink
            that points outside, a NUL byte); the message names `field`, never the root.
    """
    base = Path(root).resolve()
    try:
        path = base.joinpath(*parts).resolve()
    except (ValueError, OSError, RuntimeError) as error:  # a NUL byte; a symlink loop
        raise InvalidArgument(f"{field}: {_shown('/'.join(parts))} is not a usable path "
                              f"({error})") from None
    if not path.is_relative_to(base):
        raise InvalidArgument(f"{field}: {_shown('/'.join(parts))} leads outside its root "
                              "folder")
    return path
