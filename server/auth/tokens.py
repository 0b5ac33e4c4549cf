"""The token file: hashes of bearer tokens, each with a name and scopes; checked strictly.

The file (`--auth-tokens FILE`) holds only SHA-256 hashes, never tokens:

    [[tokens]]
    name = "trainer-1"
    sha256 = "<hex sha256 of the token's UTF-8 bytes>"
    scopes = ["infer", "stream"]

`read_token_file` refuses an unknown key or scope, bad hex, and a repeated name or
hash, naming the entry. `TokenStore` answers which entry a presented token is,
comparing its hash with every known hash in constant time, and `reload()` swaps in
a new file only when the whole file is valid.

Example:
    >>> entry = TokenEntry("ci", hash_token("s3cret"), frozenset({Scope.INFER}))
    >>> TokenStore([entry]).authenticate("s3cret").name
    'ci'
    >>> TokenStore([entry]).authenticate("guess") is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augserve.server.auth.scopes import Scope

log = logging.getLogger(__name__)

#: Token names appear in logs and limits: a short, plain character set.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")
_KEYS = {"name", "sha256", "scopes"}


class TokenFileError(ValueError):
    """The token file is unreadable or invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class TokenEntry:
    """One `[[tokens]]` entry: its name, the token's SHA-256 (32 bytes) and its scopes."""

    name: str
    digest: bytes
    scopes: frozenset[Scope]


def hash_token(token: str) -> bytes:
    """The SHA-256 digest of the token's UTF-8 bytes (what the file stores, as hex)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_name(name: object) -> str:
    """`name` if it is a valid token name; ValueError saying what is allowed otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name {name!r} must be 1-64 of A-Z a-z 0-9 . _ @ -, "
                         "starting with a letter or digit")
    return name


def parse_scopes(scopes: object) -> frozenset[Scope]:
    """A non-empty list of scope names as Scopes; ValueError naming an unknown one."""
    if not isinstance(scopes, list) or not scopes:
        raise ValueError(f"scopes must be a non-empty list, got {scopes!r}")
    values = [s.value for s in Scope]
    parsed = []
    for scope in scopes:
        if not isinstance(scope, str) or scope not in values:
            known = ", ".join(values)
            raise ValueError(f"unknown scope {scope!r}; known: {known}")
        parsed.append(Scope(scope))
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"scopes {scopes!r} repeat a scope")
    return frozenset(parsed)


def _entry(raw: Any) -> TokenEntry:
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a table, got {raw!r}")
    keys = set(raw)
    if keys != _KEYS:
        missing, unknown = sorted(_KEYS - keys), sorted(keys - _KEYS)
        raise ValueError(f"keys must be exactly {sorted(_KEYS)} (missing {missing}, "
                         f"unknown {unknown})")
    name = check_name(raw["name"])
    digest = raw["sha256"]
    if not isinstance(digest, str) or not _HEX.fullmatch(digest.lower()):
        raise ValueError(f"sha256 of {name!r} must be 64 hex digits, got {digest!r}")
    return TokenEntry(name, bytes.fromhex(digest), parse_scopes(raw["scopes"]))


def parse_tokens(document: Mapping[str, Any], source: str) -> tuple[TokenEntry, ...]:
    """The entries of a parsed token file; TokenFileError naming `source` and the entry."""
    if set(document) != {"tokens"}:
        raise TokenFileError(f"{source}: expected only [[tokens]] entries, got keys "
                             f"{sorted(document)}")
    raws = document["tokens"]
    if not isinstance(raws, list) or not raws:
        raise TokenFileError(f"{source}: [[tokens]] must hold at least one entry")
    entries: list[TokenEntry] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for index, raw in enumerate(raws):
        where = f"{source}: tokens[{index}]"
        try:
            entry = _entry(raw)
        except ValueError as error:
            raise TokenFileError(f"{where}: {error}") from None
        if entry.name in names:
            raise TokenFileError(f"{where}: name {entry.name!r} is used by an earlier entry")
        if entry.digest in digests:
            raise TokenFileError(f"{where} ({entry.name!r}): sha256 repeats an earlier "
                                 "entry's; every token must be distinct")
        names.add(entry.name)
        digests.add(entry.digest)
        entries.append(entry)
    return tuple(entries)


def read_token_file(path: Path) -> tuple[TokenEntry, ...]:
    """Read and check the token file at `path`; TokenFileError says what is wrong where."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise TokenFileError(f"{path}: {error}") from None
    return parse_tokens(document, str(path))


class TokenStore:
    """The known tokens; swapped whole on `reload`, so a call sees one file or the other."""

    def __init__(self, entries: Iterable[TokenEntry], path: Path | None = None) -> None:
        """Hold `entries`; `path` is the file `reload()` rereads."""
        self._entries = tuple(entries)
        self.path = path

    @classmethod
    def from_file(cls, path: Path) -> TokenStore:
        """The store of the token file at `path` (TokenFileError if it is invalid)."""
        return cls(read_token_file(path), path)

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the known tokens, in file order."""
        return tuple(entry.name for entry in self._entries)

    def authenticate(self, token: str) -> TokenEntry | None:
        """The entry whose hash is the token's, or None.

        Every known hash is compared, with `hmac.compare_digest`, whatever matches
        first: the time taken does not say which entry (or how much of one) matched.
        """
        digest = hash_token(token)
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found

    def reload(self) -> bool:
        """Reread the file; on any error keep the current tokens and log why. True if swapped."""
        if self.path is None:
            return False
        try:
            entries = read_token_file(self.path)
        except TokenFileError as error:
            log.error("token file not reloaded, the old tokens stay: %s", error)
            return False
        self._entries = entries
        log.info("token file %s reloaded: %d token(s)", self.path, len(entries))
        return True
