"""Bearer tokens with scopes: the token file, the method -> scope table, the interceptor.

`--auth-tokens FILE` names a TOML file of token hashes (`tokens.py`); every RPC's
scope is declared in one table (`scopes.py`); `AuthInterceptor` (`interceptor.py`)
checks the `authorization: Bearer <token>` metadata of each call, sets the caller's
`Identity` (`identity.py`) for the handler, and writes the audit log of admin RPCs
(`audit.py`). `augserve token new` (`cli.py`) makes a token and its file entry.
"""
