"""`eco2 dlq`: the recorded dead letters for an operator — list, show, replay, purge — with the replay's own logic.

`list` shows a table (domain, entry, type, job, cause, transient or poison, attempt, replayed) and counts per
domain; `replay --id REF` or `replay --all-transient` reopens and re-sends as the replay function does, without
its wait (an operator asking is the reason to go now) but within its attempt limit, and never a poison letter.
Redis comes from --redis-url or REDIS_URL; the broker ingress from --sink, K_SINK, or the running local pack.
"""

# No `from __future__ import annotations`: typer reads the commands' annotations at run time.
import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from eco2.connections import http_timeout
from eco2.dead_letters import DOMAINS
from eco2.errors import Eco2Error
from eco2.functions.replay import Letter, Outcome, Policy, Replayer, Result, find_letter, read_letters, replays
from eco2.jobs import JobStore
from eco2.sender_auth import SenderCredential

console = Console(width=160)
T = TypeVar("T")
DOMAIN_HELP = f"only this domain ({', '.join(DOMAINS)})"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
# The commands that only read or delete letters send nothing.
NO_SINK = ("", SenderCredential())


def _redis_url(option: str | None) -> str:
    return option or os.environ.get("REDIS_URL") or DEFAULT_REDIS


def _sink(option: str | None) -> tuple[str, SenderCredential]:
    """Where replays go and the sender credential they present: the options and environment (ECO2_EVENT_TOKEN,
    ECO2_EVENT_TOKEN_FILE) for a cluster's broker, else the running local pack's ingress and its token."""
    if option or os.environ.get("K_SINK"):
        return str(option or os.environ["K_SINK"]), SenderCredential.from_env(os.environ)
    from eco2_tools.local import control

    state = control.read_state(control.default_options()) or {}
    if not state.get("ingress"):
        console.print("[red]no broker to send to: pass --sink, set K_SINK, or start the pack (`eco2 up -d`)[/]")
        raise typer.Exit(2)
    return str(state["ingress"]), SenderCredential(token=state.get("event_token") or None)


def _check_domain(domain: str | None) -> str | None:
    if domain is not None and domain not in DOMAINS:
        console.print(f"[red]unknown domain {domain!r}; one of {', '.join(DOMAINS)}[/]")
        raise typer.Exit(2)
    return domain


def _run(redis_url: str, sink: tuple[str, SenderCredential], work: Callable[[Replayer], Awaitable[T]]) -> T:
    # Imported when a command runs: `eco2 up` builds this sub-app too, and the runner it starts sends no HTTP
    # with httpx (eco2_tools.local.client), so it must not carry it.
    import httpx

    async def main() -> T:
        store = JobStore.from_url(redis_url, ttl_seconds=24 * 3600)
        async with httpx.AsyncClient(timeout=http_timeout()) as http:
            try:
                sink_url, credential = sink
                return await work(Replayer(store, http, sink_url, Policy.from_env(os.environ), credential=credential))
            finally:
                await store.aclose()

    try:
        return asyncio.run(main())
    except Eco2Error as exc:
        console.print(f"[red]{exc.code}: {exc.message}[/]")
        raise typer.Exit(1) from None


def _cause(letter: Letter) -> str:
    code = letter.attributes.get("knativeerrorcode", "") or "0"
    data = " ".join(letter.attributes.get("knativeerrordata", "").split())
    return (f"HTTP {code}" if code != "0" else "no response") + (f" {data[:50]}" if data else "")


def _kind(letter: Letter, policy: Policy) -> str:
    refused = policy.check(letter)
    return "transient" if refused is None else refused.value


async def _listing(replayer: Replayer, domain: str | None) -> tuple[list[Letter], dict[str, dict[str, Any]]]:
    letters = await read_letters(replayer.redis, domain)
    done: dict[str, dict[str, Any]] = {}
    for name in (domain,) if domain else DOMAINS:
        done |= {f"{name}/{entry}": value for entry, value in (await replays(replayer.redis, name)).items()}
    return letters, done


def list_letters(
    domain: str | None = typer.Option(None, help=DOMAIN_HELP),
    redis_url: str | None = typer.Option(None, help="Redis URL (default: REDIS_URL)"),
) -> None:
    """Every recorded dead letter, oldest first, with counts per domain."""
    letters, done = _run(_redis_url(redis_url), NO_SINK, lambda r: _listing(r, _check_domain(domain)))
    policy = Policy.from_env(os.environ)
    table = Table("letter", "type", "job", "cause", "kind", "attempt", "replayed", "recorded")
    for letter in letters:
        replayed = done.get(letter.ref, {}).get("outcome", "")
        age = f"{time.time() - letter.recorded_at:.0f}s ago"
        row = (letter.ref, letter.attributes["type"], letter.attributes.get("subject", ""), _cause(letter))
        table.add_row(*row, _kind(letter, policy), str(letter.attempt), replayed, age)
    console.print(table)
    counts = Counter(letter.domain for letter in letters)
    transient = Counter(letter.domain for letter in letters if policy.check(letter) is None)
    summary = ", ".join(f"{name}: {counts[name]} ({transient[name]} transient)" for name in DOMAINS if counts[name])
    console.print(f"{len(letters)} dead letters" + (f" — {summary}" if summary else ""))


def show(
    ref: str = typer.Argument(..., help="domain/entry-id, an entry id, or the event id"),
    redis_url: str | None = typer.Option(None, help="Redis URL (default: REDIS_URL)"),
) -> None:
    """One dead letter: its attributes, error, data and replay record."""

    async def one(replayer: Replayer) -> dict[str, Any]:
        letter = await find_letter(replayer.redis, ref)
        record = (await replays(replayer.redis, letter.domain)).get(letter.entry_id)
        return {
            "letter": letter.ref,
            "recorded_at": letter.recorded_at,
            "transient": letter.transient,
            "attempt": letter.attempt,
            "replay": record,
            "attributes": letter.attributes,
            "data": letter.data,
        }

    console.print_json(json.dumps(_run(_redis_url(redis_url), NO_SINK, one), ensure_ascii=False, default=str))


def replay(
    letter_id: str | None = typer.Option(None, "--id", help="replay this letter (domain/entry-id or event id)"),
    all_transient: bool = typer.Option(False, "--all-transient", help="replay every transient letter not replayed"),
    domain: str | None = typer.Option(None, help=DOMAIN_HELP),
    sink: str | None = typer.Option(None, help="broker ingress URL (default: K_SINK, else the local pack's)"),
    redis_url: str | None = typer.Option(None, help="Redis URL (default: REDIS_URL)"),
) -> None:
    """Reopen each letter's job and re-send the event to the broker; poison (4xx) letters are never replayed."""
    if (letter_id is None) == (not all_transient):
        console.print("[red]say which: --id REF or --all-transient[/]")
        raise typer.Exit(2)
    _check_domain(domain)

    async def work(replayer: Replayer) -> list[Result]:
        if letter_id is not None:
            return [await replayer.replay(await find_letter(replayer.redis, letter_id))]
        return await replayer.replay_due(domain, wait=False)

    results = _run(_redis_url(redis_url), _sink(sink), work)
    table = Table("letter", "type", "job", "outcome", "detail")
    for result in results:
        letter = result.letter
        table.add_row(
            letter.ref, letter.attributes["type"], letter.attributes.get("subject", ""), result.outcome, result.detail
        )
    console.print(table)
    counts = Counter(result.outcome.value for result in results)
    console.print(", ".join(f"{outcome}: {count}" for outcome, count in sorted(counts.items())) or "nothing to replay")
    raise typer.Exit(1 if counts[Outcome.SEND_FAILED.value] else 0)


def purge(
    older_than: float = typer.Option(..., "--older-than", help="delete letters recorded more than this many hours ago"),
    domain: str | None = typer.Option(None, help=DOMAIN_HELP),
    redis_url: str | None = typer.Option(None, help="Redis URL (default: REDIS_URL)"),
) -> None:
    """Delete the letters older than --older-than hours (replayed or not)."""
    _check_domain(domain)
    removed = _run(_redis_url(redis_url), NO_SINK, lambda r: r.purge(older_than * 3600, domain))
    console.print(f"{removed} dead letters purged")


def commands() -> typer.Typer:
    """The `eco2 dlq` sub-app (registered in eco2_tools.cli)."""
    dlq = typer.Typer(no_args_is_help=True, add_completion=False, help="Recorded dead letters: list, replay, purge")
    dlq.command("list")(list_letters)
    dlq.command("show")(show)
    dlq.command("replay")(replay)
    dlq.command("purge")(purge)
    return dlq
