"""The shared handler's rules, in process: expired entries leave, a catalog only moves forward, bad data is poison."""

from __future__ import annotations

import time

import pytest

from eco2.cachesync.events import CatalogUpdated, TokenRevoked, attributes_of
from eco2.cachesync.handler import CatalogCache, LocalCaches, RevokedTokens, RevokedUsers, decode
from eco2.errors import PoisonEvent
from eco2.rules import CharacterCatalog


def test_expired_entries_leave() -> None:
    tokens = RevokedTokens()
    now = time.time()
    tokens.merge([("live", now + 60), ("gone", now - 1), ("soon", now + 0.5)])
    assert tokens.contains("live")
    assert not tokens.contains("gone")
    assert len(tokens) == 2, "a lookup of an expired entry removes it"
    assert tokens.purge(now + 1) == 1
    assert len(tokens) == 1


def test_a_later_expiry_wins_and_an_earlier_one_never_shortens_it() -> None:
    tokens = RevokedTokens()
    now = time.time()
    tokens.add("j", now + 100)
    tokens.add("j", now + 10)
    assert tokens.contains("j", now + 50)


def test_the_catalog_only_moves_forward() -> None:
    cache = CatalogCache()
    file_catalog = cache.current
    caches = LocalCaches(RevokedTokens(), cache)
    records = file_catalog.as_records()
    caches.apply(CatalogUpdated(version=2, characters=records[:2]))
    assert (cache.version, len(cache.current.all())) == (2, 2)
    caches.apply(CatalogUpdated(version=1, characters=records))
    caches.apply(CatalogUpdated(version=2, characters=records))
    assert (cache.version, len(cache.current.all())) == (2, 2)


def test_the_replicas_and_the_functions_decode_alike() -> None:
    revoked = decode("eco2.auth.token.revoked", {"jti": "j", "user_id": "u", "expires_at": 5})
    assert revoked == TokenRevoked(jti="j", user_id="u", expires_at=5)
    with pytest.raises(PoisonEvent):
        decode("eco2.something.else", {})
    no_default = [r for r in CharacterCatalog.load().as_records() if not r["is_default"]]
    with pytest.raises(PoisonEvent, match="default"):
        decode("eco2.character.catalog.updated", {"version": 3, "characters": no_default})


def test_attributes_come_from_either_header_prefix() -> None:
    headers = {"cloudEvents:type": "t", "cloudEvents_id": b"i", "other": "x", "cloudEvents:": "empty"}
    assert attributes_of(headers) == {"type": "t", "id": "i"}


def test_a_user_revocation_refuses_the_tokens_issued_until_its_cut_off_only() -> None:
    users = RevokedUsers()
    now = time.time()
    users.add("u", issued_before=now - 10, expires_at=now + 60)
    assert users.refuses("u", issued_at=now - 20)
    assert users.refuses("u", issued_at=now - 10), "issued at the cut-off itself"
    assert not users.refuses("u", issued_at=now - 9), "a token issued after it (the user signed in again)"
    assert not users.refuses("other", issued_at=now - 20)
    users.add("u", issued_before=now - 30, expires_at=now + 60)
    assert users.refuses("u", issued_at=now - 20), "an earlier cut-off never narrows a later one"
    assert not users.refuses("u", issued_at=now - 20, now=now + 61), "gone once every such token has expired"
    assert len(users) == 0


def test_a_revocation_names_one_token_or_a_users_cut_off_not_both() -> None:
    until = time.time() + 60
    caches = LocalCaches(RevokedTokens(), CatalogCache())
    caches.apply(decode("eco2.auth.token.revoked", {"user_id": "u", "issued_before": 5.0, "expires_at": until}))
    assert caches.revoked_users.refuses("u", issued_at=4.0)
    assert len(caches.revoked) == 0
    for data in (
        {"user_id": "u", "expires_at": until},
        {"jti": "j", "user_id": "u", "issued_before": 5.0, "expires_at": until},
    ):
        with pytest.raises(PoisonEvent):
            decode("eco2.auth.token.revoked", data)
