"""The `eco2` command: serve one function, run the stand-in model, and (later) the whole pack locally."""

from __future__ import annotations

import os

import typer

from eco2 import serving
from eco2.gateway import cli as gateway_cli

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Eco² function pack")
app.command("token")(gateway_cli.token)
app.command("scan")(gateway_cli.scan)


@app.command()
def serve(
    name: str = typer.Argument(..., help="function folder under functions/, e.g. vision"),
    host: str = typer.Option(os.environ.get("HOST", "127.0.0.1"), help="address to listen on ($HOST)"),
    port: int = typer.Option(int(os.environ.get("PORT", "8080")), help="port to listen on ($PORT)"),
) -> None:
    """Serve one function on its own port, as Knative would (curl it with a CloudEvent)."""
    try:
        serving.function_source(name)
    except serving.UnknownFunction as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"serving function {name} on http://{host}:{port}/ (POST a CloudEvent; GET /healthz, /metrics)")
    serving.serve(name, host=host, port=port)


@app.command("model-standin")
def model_standin(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8090, help="port to listen on"),
) -> None:
    """Run the STAND-IN model server (OpenAI-compatible, deterministic; not a real model)."""
    from eco2.standin import StandinConfig, run

    run(host, port, StandinConfig.from_env(os.environ))


@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="run in the background; return once ready"),
) -> None:
    """Start the whole pack on this machine from knative/ and eventing/, over the local Redis and RabbitMQ."""
    from eco2.local import control

    options = control.default_options()
    raise typer.Exit(control.up_detached(options) if detach else control.up_foreground(options))


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="print the running endpoints as JSON")) -> None:
    """Which functions run where, replicas, queue depths and dead letters."""
    from eco2.local import control

    raise typer.Exit(control.status(control.default_options(), as_json))


@app.command()
def down() -> None:
    """Stop the pack started with `eco2 up --detach`."""
    from eco2.local import control

    raise typer.Exit(control.down(control.default_options()))


@app.command()
def demo(
    sample: str = typer.Option("clear_pet_bottle", help="a stand-in sample image name"),
    text: str = typer.Option("다 마신 생수병이에요", help="the user's text"),
    timeout: float = typer.Option(60.0, help="seconds to wait for the result"),
) -> None:
    """Send one sample scan into the running pack and print its progress and answer."""
    import asyncio

    from eco2.local import control
    from eco2.local.demo import run_demo

    state = control.read_state(control.default_options())
    if state is None:
        typer.echo("the pack is not running: start it with `eco2 up --detach`", err=True)
        raise typer.Exit(1)
    raise typer.Exit(asyncio.run(run_demo(state, sample, text, timeout)))


if __name__ == "__main__":
    app()
