"""`eco2 token` (a signed token for local use) and `eco2 scan` (submit a photo URL, follow it live, print the answer).

`scan` takes image URLs only: the gateway hands the URL to the model and never accepts uploads, so a local
file must be served over http first (the stand-in model serves its samples at /samples/<name>.png).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from eco2.gateway.tokens import DEV_JWT_SECRET, issue_token

if TYPE_CHECKING:
    import httpx

    from eco2_tools.sse_client import SseMessage

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Talk to the Eco² gateway")
TERMINAL = frozenset({"done", "failed", "cancelled"})
_RECONNECTS = 5


def _secret() -> str | None:
    secret = os.environ.get("ECO2_JWT_SECRET")
    if secret:
        return secret
    return DEV_JWT_SECRET if os.environ.get("ECO2_ENV", "").lower() == "development" else None


def _mint(user: str, ttl: int, vip: bool) -> str:
    secret = _secret()
    if secret is None:
        typer.echo("error: set ECO2_JWT_SECRET (or ECO2_ENV=development for the development secret)", err=True)
        raise typer.Exit(2)
    return issue_token(
        user,
        secret,
        ttl,
        "vip" if vip else None,
        issuer=os.environ.get("ECO2_JWT_ISSUER") or "eco2",
        audience=os.environ.get("ECO2_JWT_AUDIENCE") or "eco2",
    )


@app.command()
def token(
    user: str = typer.Option("dev-user", "--user", help="the token's subject (user id)"),
    ttl: int = typer.Option(3600, "--ttl", min=1, help="lifetime in seconds"),
    vip: bool = typer.Option(False, "--vip", help="add the priority: vip claim (high-priority scans)"),
) -> None:
    """Print an HS256 token for the gateway, signed with ECO2_JWT_SECRET (or the development secret)."""
    typer.echo(_mint(user, ttl, vip))


@app.command()
def scan(
    image: str = typer.Argument(..., help="http(s) URL of the photo"),
    text: str | None = typer.Option(None, "--text", help="what the user says about the item"),
    gateway: str = typer.Option("http://127.0.0.1:8080", "--gateway", envvar="ECO2_GATEWAY", help="gateway URL"),
    bearer: str | None = typer.Option(None, "--token", envvar="ECO2_TOKEN", help="bearer token (default: mint one)"),
    model: str | None = typer.Option(None, "--model", help="model name (one the gateway allows)"),
    timeout: float = typer.Option(180.0, "--timeout", help="give up after this many seconds"),
) -> None:
    """Submit a photo URL, show the scan's progress live, print the answer; exit 1 unless it is done."""
    if not image.startswith(("http://", "https://")):
        where = "a local file" if Path(image).exists() else "not a URL"
        typer.echo(
            f"error: {image!r} is {where}; only http(s) image URLs are supported for now "
            "(serve the file over http, e.g. the stand-in's /samples/<name>.png, and pass its URL)",
            err=True,
        )
        raise typer.Exit(2)
    import httpx

    headers = {"Authorization": f"Bearer {bearer or _mint('cli-user', 3600, False)}"}
    body: dict[str, Any] = {"image_url": image, "user_input": text, "model": model}
    console = Console()
    with httpx.Client(base_url=gateway.rstrip("/"), headers=headers, timeout=httpx.Timeout(30.0, read=60.0)) as http:
        submitted = http.post("/api/v1/scan", json={k: v for k, v in body.items() if v is not None})
        if submitted.status_code != 202:
            _fail(console, submitted)
        job = submitted.json()
        console.print(f"job [bold]{job['job_id']}[/bold] queued")
        last = _follow(http, console, job["stream_url"], timeout)
        result = http.get(job["result_url"])
        if result.status_code != 200:
            _fail(console, result)
        answer = result.json()
    _print_answer(console, answer)
    if answer["status"] != "done" or (last is not None and last.get("status") != "done"):
        raise typer.Exit(1)


def _fail(console: Console, response: httpx.Response) -> None:
    try:
        problem = response.json()
        detail = f"{problem.get('error')}: {problem.get('message')}"
    except ValueError:
        detail = response.text[:300]
    console.print(f"[red]error[/red] {response.status_code} {detail}")
    raise typer.Exit(1)


def _follow(http: httpx.Client, console: Console, stream_url: str, timeout: float) -> dict[str, Any] | None:
    """Show the SSE stream as a progress bar until the terminal event; reconnect with Last-Event-ID."""
    import httpx

    from eco2_tools.sse_client import messages

    last_id: str | None = None
    last: dict[str, Any] | None = None
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:>3.0f}%"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("queued", total=100)
        for _ in range(_RECONNECTS):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with http.stream("GET", stream_url, headers=headers, timeout=httpx.Timeout(10.0, read=timeout)) as r:
                    if r.status_code != 200:
                        r.read()
                        _fail(console, r)
                    for message in messages(r):
                        last_id, last = message.id or last_id, _update(progress, task, message)
                        if last.get("status") in TERMINAL:
                            return last
            except httpx.TransportError:
                continue
    return last


def _update(progress: Progress, task: Any, message: SseMessage) -> dict[str, Any]:
    event: dict[str, Any] = message.json()
    description = f"{event.get('stage')}: {event.get('message') or event.get('status')}"
    progress.update(task, completed=event.get("progress", 0), description=description)
    return event


def _print_answer(console: Console, answer: dict[str, Any]) -> None:
    console.print(f"status: [bold]{answer['status']}[/bold] — {answer.get('message', '')}")
    if answer.get("error"):
        console.print(f"[red]{answer['error'].get('code')}[/red]: {answer['error'].get('message')}")
    pipeline = answer.get("pipeline_result") or {}
    classification = pipeline.get("classification") or {}
    if classification:
        parts = [classification.get(k) for k in ("major_category", "middle_category", "minor_category")]
        console.print("item: " + " / ".join(p for p in parts if p))
    final = pipeline.get("final_answer") or {}
    for number, step in enumerate(final.get("disposal_steps") or [], start=1):
        console.print(f"  {number}. {step}")
    for missing in final.get("insufficiencies") or []:
        console.print(f"  [yellow]![/yellow] {missing}")
    if final.get("user_answer"):
        console.print(final["user_answer"])
    reward = answer.get("reward")
    if reward:
        console.print(f"reward: [green]{reward.get('name')}[/green]")
    elif answer["status"] == "done":
        console.print(f"no reward ({answer.get('reward_reason') or 'none'})")
