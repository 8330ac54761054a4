"""`eco2 demo`: send one sample scan into the running pack and print its progress and answer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from cloudevents.conversion import to_binary
from rich.console import Console

from eco2.events import EventType, ScanRequested, new_event
from eco2.jobs import TERMINAL_STATUSES, JobStore
from eco2.sender_auth import SenderCredential

console = Console()


async def run_demo(state: dict[str, Any], sample: str, text: str | None, timeout: float) -> int:
    model = state.get("model")
    if not model:
        console.print(
            "[red]the demo needs the stand-in model's sample images; start the pack without OPENAI_API_KEY[/]"
        )
        return 2
    job_id = uuid.uuid4().hex
    scan = ScanRequested(job_id=job_id, user_id="demo-user", image_url=f"{model}/samples/{sample}.png", user_input=text)
    event = new_event(EventType.SCAN_REQUESTED, scan, source="/eco2/demo", job_id=job_id)
    store = JobStore.from_url(str(state["redis"]), ttl_seconds=24 * 3600)
    try:
        await store.create(job_id, scan.user_id)
        headers, body = to_binary(event)
        async with httpx.AsyncClient() as http:
            credential = SenderCredential(token=state.get("event_token") or None).headers()
            response = await http.post(str(state["ingress"]), headers=dict(headers) | credential, content=body)
        if response.status_code != 202:
            console.print(f"[red]the ingress refused the event: {response.status_code} {response.text}[/]")
            return 1
        console.print(f"scan {job_id}: sample image [bold]{sample}[/] → {state['ingress']} (202)")
        return await _follow(store, job_id, timeout)
    finally:
        await store.aclose()


async def _follow(store: JobStore, job_id: str, timeout: float) -> int:
    seen, started = 0, time.monotonic()
    while time.monotonic() - started < timeout:
        for event in await store.events(job_id, after_seq=seen):
            seen = event.seq
            console.print(
                f"  {time.monotonic() - started:5.1f}s  {event.progress:3d}%  {event.stage:<7} {event.message}"
            )
            if event.status in TERMINAL_STATUSES:
                _print_result(await store.get(job_id) or {})
                return 0 if event.status == "done" else 1
        await asyncio.sleep(0.1)
    console.print(f"[red]no result after {timeout:.0f}s[/] (`eco2 status` shows queues and dead letters)")
    return 1


def _print_result(job: dict[str, str]) -> None:
    if not job.get("result"):
        console.print(f"[red]failed:[/] {job.get('error', '')}")
        return
    result = json.loads(job["result"])
    answer = result["pipeline_result"]["final_answer"]
    console.print("[bold]disposal steps[/]")
    for number, step in enumerate(answer["disposal_steps"], 1):
        console.print(f"  {number}. {step}")
    for item in answer["insufficiencies"]:
        console.print(f"  [yellow]부족: {item}[/]")
    console.print(f"[bold]answer[/] {answer['user_answer']}")
    reward = result.get("reward")
    console.print(f"[bold]reward[/] {reward['name'] if reward else 'none (' + result.get('reward_reason', '') + ')'}")
