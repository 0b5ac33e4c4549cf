"""`augserve token new --name N --scopes infer,stream`: a fresh token and its file entry.

The token is printed once and kept nowhere: the server's `--auth-tokens` file holds
only its SHA-256, in the `[[tokens]]` entry printed below it, ready to paste.

Example output:

    token: 3q2-7wX...
    (shown once: give it to the client; the server keeps only its hash)

    [[tokens]]
    name = "trainer-1"
    sha256 = "9f86d08..."
    scopes = ["infer", "stream"]
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from augserve.server.auth.tokens import check_name, hash_token, parse_scopes

COMMANDS = ("token",)
TOKEN_BYTES = 32


def add_commands(commands: Any) -> None:
    """Add `token new` to the top-level parser's sub-commands."""
    token = commands.add_parser("token", help="make bearer tokens for --auth-tokens")
    sub = token.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="print a fresh token and its [[tokens]] entry")
    new.add_argument("--name", required=True, help="the token's name (in logs and limits)")
    new.add_argument("--scopes", required=True,
                     help="comma-separated: infer, augment, stream, jobs, admin")


def token_entry(name: str, token: str, scopes: list[str]) -> str:
    """The `[[tokens]]` TOML entry of `token` (its hash, never the token itself)."""
    quoted = ", ".join(json.dumps(scope) for scope in scopes)
    return (f"[[tokens]]\nname = {json.dumps(name)}\nsha256 = \"{hash_token(token).hex()}\"\n"
            f"scopes = [{quoted}]\n")


def main(args: argparse.Namespace) -> int:
    """Run `augserve token new`; exit status 1 (and why, on stderr) for a bad name or scope."""
    scopes = [scope.strip() for scope in args.scopes.split(",")]
    try:
        check_name(args.name)
        parse_scopes(scopes)
    except ValueError as error:
        raise SystemExit(f"augserve token new: {error}") from None
    token = secrets.token_urlsafe(TOKEN_BYTES)
    print(f"token: {token}")
    print("(shown once: give it to the client; the server keeps only its hash)\n")
    print(token_entry(args.name, token, scopes), end="")
    return 0
