"""The token file is checked strictly, and a bad file on reload keeps the old tokens."""

from __future__ import annotations

import logging

import pytest

from augserve.server.auth.scopes import Scope
from augserve.server.auth.tokens import TokenFileError, TokenStore, hash_token, read_token_file


def entry(name: str, token: str, scopes: str = '["infer"]', sha256: str | None = None) -> str:
    digest = sha256 if sha256 is not None else hash_token(token).hex()
    return f'[[tokens]]\nname = "{name}"\nsha256 = "{digest}"\nscopes = {scopes}\n'


def test_a_valid_file_reads_into_entries(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(entry("trainer-1", "a", '["infer", "stream"]') + entry("ops", "b", '["admin"]'))
    entries = read_token_file(path)
    assert [(e.name, e.digest, e.scopes) for e in entries] == [
        ("trainer-1", hash_token("a"), frozenset({Scope.INFER, Scope.STREAM})),
        ("ops", hash_token("b"), frozenset({Scope.ADMIN}))]


BAD = [
    (entry("t", "a", '["infer", "root"]'), "tokens[0]: unknown scope 'root'; known: infer, "
     "augment, stream, jobs, admin"),
    (entry("t", "a", sha256="xyz"), "tokens[0]: sha256 of 't' must be 64 hex digits"),
    (entry("t", "a", sha256="ab" * 31), "tokens[0]: sha256 of 't' must be 64 hex digits"),
    (entry("t", "a") + entry("t", "b"), "tokens[1]: name 't' is used by an earlier entry"),
    (entry("t", "a") + entry("u", "a"), "tokens[1] ('u'): sha256 repeats an earlier entry's"),
    (entry("t", "a", "[]"), "tokens[0]: scopes must be a non-empty list"),
    (entry("t", "a", '["infer", "infer"]'), "tokens[0]: scopes ['infer', 'infer'] repeat"),
    (entry("t", "a", '"infer"'), "tokens[0]: scopes must be a non-empty list"),
    (entry("bad name", "a"), "tokens[0]: name 'bad name' must be 1-64 of"),
    (entry("t", "a") + 'extra = 1\n', "tokens[0]: keys must be exactly ['name', 'scopes', "
     "'sha256'] (missing [], unknown ['extra'])"),
    ('[[token]]\nname = "t"\n', "expected only [[tokens]] entries, got keys ['token']"),
    ("tokens = []\n", "[[tokens]] must hold at least one entry"),
    ("[[tokens]\n", "Expected"),
]


@pytest.mark.parametrize("text, words", BAD)
def test_a_bad_file_is_refused_naming_the_file_and_the_entry(tmp_path, text, words):
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(TokenFileError) as caught:
        read_token_file(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert words in str(caught.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(TokenFileError, match="No such file"):
        TokenStore.from_file(tmp_path / "absent.toml")


def test_authenticate_finds_the_entry_of_a_token_and_nothing_else(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(entry("a", "token-a") + entry("b", "token-b"))
    store = TokenStore.from_file(path)
    assert store.authenticate("token-b").name == "b"
    assert store.authenticate("token-a").name == "a"
    assert store.authenticate("token-c") is None
    assert store.authenticate("") is None


def test_reload_swaps_a_valid_file_and_keeps_the_old_tokens_on_a_bad_one(tmp_path, caplog):
    path = tmp_path / "tokens.toml"
    path.write_text(entry("old", "old-token"))
    store = TokenStore.from_file(path)
    path.write_text(entry("new", "new-token"))
    assert store.reload()
    assert store.authenticate("new-token").name == "new"
    assert store.authenticate("old-token") is None
    path.write_text(entry("broken", "x", '["everything"]'))
    with caplog.at_level(logging.ERROR, logger="augserve.server.auth.tokens"):
        assert not store.reload()
    assert store.names == ("new",)
    assert "token file not reloaded, the old tokens stay" in caplog.text
    assert "unknown scope 'everything'" in caplog.text
