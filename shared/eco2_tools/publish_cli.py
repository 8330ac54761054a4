"""`eco2 catalog push` and `eco2 revoke`: an operator publishes on the cache-sync exchanges, confirmed by the broker.

Both go through eco2.cachesync.publisher (pika's blocking connection, publisher confirms, timeouts), the same
publisher a synchronous service imports, so they send exactly what the replicas and the sync functions read.
The broker comes from --amqp-url or AMQP_URL, the exchanges from ECO2_CATALOG_EXCHANGE / ECO2_BLACKLIST_EXCHANGE
(the names the replicas read), Redis (to read the current catalog version and to see catalog-sync store the new
one) from --redis-url, ECO2_REDIS_CACHE_URL or REDIS_URL. The event's source names who published it.
"""

# No `from __future__ import annotations`: typer reads the commands' annotations at run time.
import getpass
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from eco2 import keys
from eco2.cachesync.events import MAX_CHARACTERS
from eco2.cachesync.publisher import Published, PublisherSettings, PublishFailed, SyncPublisher
from eco2.connections import sync_redis
from eco2.rules import CharacterCatalog, RuleDataError

# Soft wrap: a long path or id stays on one line, whole for a script to read.
console = Console(width=160, soft_wrap=True)
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
# How long a revocation lasts when the token's expiry is not given, and a user's after its cut-off: the longest a
# token may live (the gateway's ECO2_JWT_MAX_LIFETIME_SECONDS default), so no token issued before it outlives it.
DEFAULT_REVOCATION_SECONDS = 7 * 24 * 3600.0
# The user recorded with a token revoked by its jti alone (the event names one; the check uses the jti only).
UNKNOWN_USER = "(unknown)"
POLL_SECONDS = 0.1


def operator_source() -> str:
    """The event's source: who published it, from where (shown by the sync functions' logs)."""
    return f"/eco2/operator/{getpass.getuser()}@{socket.gethostname()}"


def _env(amqp_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if amqp_url:
        env["AMQP_URL"] = amqp_url
    return env


def _redis_url(option: str | None) -> str:
    return option or os.environ.get("ECO2_REDIS_CACHE_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]{message}[/]")
    return typer.Exit(code)


def _publish(amqp_url: str | None, send: Callable[[SyncPublisher], Published]) -> Published:
    settings = PublisherSettings.from_env(_env(amqp_url))
    try:
        with SyncPublisher(settings, source=operator_source()) as publisher:
            return send(publisher)
    except PublishFailed as exc:
        raise _fail(f"not published ({exc.code}): {exc.message}", 1) from None


def read_catalog(path: Path) -> list[dict[str, Any]]:
    """The file's characters, validated as every replica will (exactly one default, known categories, ...)."""
    try:
        catalog = CharacterCatalog.load(path)
    except RuleDataError as exc:
        raise _fail(f"not a valid catalog: {exc}") from None
    records = catalog.as_records()
    if len(records) > MAX_CHARACTERS:
        raise _fail(f"{path}: {len(records)} characters; a catalog holds at most {MAX_CHARACTERS}")
    return records


def stored_version(redis_url: str) -> int | None:
    """The catalog version Redis holds (0: none stored yet), or None when Redis cannot be read."""
    client = sync_redis(redis_url, socket_timeout=2.0)
    try:
        return int(client.hget(keys.CHARACTER_CATALOG, "version") or 0)
    except Exception:
        return None
    finally:
        client.close()


def wait_stored(redis_url: str, version: int, timeout: float) -> int | None:
    """The version Redis holds once it is `version` or newer, within `timeout`; else the last one read."""
    deadline = time.monotonic() + timeout
    held = stored_version(redis_url)
    while (held is None or held < version) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        held = stored_version(redis_url)
    return held


def push(
    file: str = typer.Argument(..., help="the catalog: a JSON list of characters"),
    version: int | None = typer.Option(None, min=1, help="the version to publish (default: Redis's + 1)"),
    wait: float = typer.Option(10.0, min=0, help="seconds to wait for catalog-sync to store it (0: don't)"),
    amqp_url: str | None = typer.Option(None, help="broker URL (default: AMQP_URL)"),
    redis_url: str | None = typer.Option(None, help="Redis URL (default: ECO2_REDIS_CACHE_URL, REDIS_URL)"),
) -> None:
    """Validate a character catalog and publish it as a new version to every replica (publisher confirms)."""
    characters = read_catalog(Path(file))
    redis = _redis_url(redis_url)
    held = stored_version(redis)
    if version is None:
        # Unix seconds when Redis cannot say: later than any version pushed the same way before.
        version = held + 1 if held is not None else int(time.time())
    elif held is not None and version <= held:
        raise _fail(f"version {version} is not newer than the stored {held}: every replica would ignore it")
    published = _publish(amqp_url, lambda publisher: publisher.publish_catalog(version, characters))
    console.print(
        f"published catalog version {version} ({len(characters)} characters) on {published.exchange}: "
        f"confirmed by the broker, event {published.event_id}, source {operator_source()}"
    )
    if wait <= 0:
        return
    now = wait_stored(redis, version, wait)
    if now == version:
        console.print(f"applied: catalog-sync stored version {version} in Redis (replicas warm up from it)")
    elif now is not None and now > version:
        console.print(f"[yellow]superseded: Redis holds version {now}, newer than {version}[/]")
    else:
        raise _fail(
            f"not seen applied: Redis holds version {now if now is not None else '(unreadable)'} after {wait:g} s"
            " (is catalog-sync running? the replicas listening got it all the same)",
            1,
        )


def revoke(
    jti: str | None = typer.Option(None, "--jti", help="revoke this token (its jti claim)"),
    user: str | None = typer.Option(
        None, "--user", help="alone: revoke every token of this user issued so far; with --jti: the token's user"
    ),
    expires_at: float | None = typer.Option(
        None, "--expires-at", help="--jti: when the token expires (unix seconds; default: now + the longest token life)"
    ),
    issued_before: float | None = typer.Option(
        None, "--issued-before", help="--user: refuse the tokens issued at or before this (unix seconds; default: now)"
    ),
    amqp_url: str | None = typer.Option(None, help="broker URL (default: AMQP_URL)"),
) -> None:
    """Revoke one token (--jti) or every token of a user (--user) everywhere: every gateway and authz replica
    refuses it until it would have expired."""
    now = time.time()
    longest = _longest_token_life()
    if jti is not None:
        until = expires_at if expires_at is not None else now + longest
        if until <= now:
            raise _fail("that token has expired already: nothing to revoke")
        who = user or UNKNOWN_USER
        published = _revocation(amqp_url, lambda publisher: publisher.revoke_token(jti, who, until))
        what = f"token {jti} of {who}"
    elif user is not None:
        cut = issued_before if issued_before is not None else now
        until = cut + longest
        if until <= now:
            raise _fail("every token issued by then has expired already: nothing to revoke")
        published = _revocation(amqp_url, lambda publisher: publisher.revoke_user(user, cut, until))
        what = f"every token of {user} issued until {_utc(cut)}"
    else:
        raise _fail("say which: --jti JTI (one token) or --user USER (every token of the user)")
    console.print(
        f"revoked {what}, until {_utc(until)}, on {published.exchange}: confirmed by the broker,"
        f" event {published.event_id}"
    )


def _revocation(amqp_url: str | None, send: Callable[[SyncPublisher], Published]) -> Published:
    try:
        return _publish(amqp_url, send)
    except ValueError as exc:  # the event's own checks (lengths)
        raise _fail(f"not a valid revocation: {str(exc)[:300]}") from None


def _longest_token_life() -> float:
    """The gateway's ECO2_JWT_MAX_LIFETIME_SECONDS where this machine has it, else its default."""
    raw = os.environ.get("ECO2_JWT_MAX_LIFETIME_SECONDS", "")
    try:
        return float(raw) if raw else DEFAULT_REVOCATION_SECONDS
    except ValueError:
        raise _fail("ECO2_JWT_MAX_LIFETIME_SECONDS must be a number of seconds") from None


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(when))


def catalog_commands() -> typer.Typer:
    """The `eco2 catalog` sub-app (registered in eco2_tools.cli)."""
    catalog = typer.Typer(no_args_is_help=True, add_completion=False, help="The character catalog every replica holds")
    catalog.command("push")(push)

    @catalog.callback()
    def group() -> None:
        """The character catalog every replica holds."""  # a group, so `push` stays a sub-command

    return catalog
