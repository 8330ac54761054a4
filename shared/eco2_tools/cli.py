"""The workshop's `eco2` commands: the stand-in model, the whole pack on this machine, the gateway's client, bench.

The console script is the pods' `eco2.command`: it serves `serve` and `worker` itself and hands every other
command here through the `eco2.commands` entry point, so a function process never loads typer, rich or this package.
"""

# No `from __future__ import annotations`: typer reads the commands' annotations at run time, and `typer` is
# imported in the functions that build them, not in this module's globals.
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

SERVE = "serve"
WORKER = "worker"
# Commands whose arguments (--help included) go to their own argparse parser, untouched by typer.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def run(argv: Sequence[str]) -> None:
    """The `eco2.commands` entry point: every command but the pods' fast paths (`eco2.command`)."""
    commands()(args=list(argv), prog_name="eco2")


def commands() -> "typer.Typer":
    """Every `eco2` command but the fast path of `serve` (listed here too, for `eco2 --help`)."""
    import typer

    from eco2_tools import gateway_cli

    commands = typer.Typer(no_args_is_help=True, add_completion=False, help="Eco² function pack")
    commands.command("token")(gateway_cli.token)
    commands.command("scan")(gateway_cli.scan)

    @commands.command(SERVE, context_settings=PASS_THROUGH, add_help_option=False)
    def serve(ctx: typer.Context) -> None:
        """Serve one function on its own port, as Knative would: `eco2 serve NAME [--host H] [--port P]`."""
        from eco2 import serving

        raise typer.Exit(serving.main(ctx.args))

    @commands.command(WORKER, context_settings=PASS_THROUGH, add_help_option=False)
    def worker(ctx: typer.Context) -> None:
        """Run the stages as a Celery chain (the seed's runtime): `eco2 worker --celery [--queues Q] [-c N]`."""
        from eco2.celery_runtime import worker

        raise typer.Exit(worker.main(ctx.args))

    @commands.command("bench", context_settings=PASS_THROUGH, add_help_option=False)
    def bench(ctx: typer.Context) -> None:
        """The pack beside the Celery baseline: throughput, latency, CPU per scan, memory (`eco2 bench --help`)."""
        from eco2_tools.bench.command import main

        raise typer.Exit(main(ctx.args))

    @commands.command("model-standin")
    def model_standin(
        host: str = typer.Option("127.0.0.1", help="address to listen on"),
        port: int = typer.Option(8090, help="port to listen on"),
    ) -> None:
        """Run the STAND-IN model server (OpenAI-compatible, deterministic; not a real model)."""
        from eco2_tools.standin import StandinConfig, run

        run(host, port, StandinConfig.from_env(os.environ))

    _pack_commands(commands)
    commands.add_typer(__import__("eco2_tools.dlq_cli", fromlist=["commands"]).commands(), name="dlq")
    commands.add_typer(__import__("eco2_tools.ha.cli", fromlist=["commands"]).commands(), name="ha")
    _publishing_commands(commands)
    return commands


def _publishing_commands(commands: "typer.Typer") -> None:
    """`catalog push` and `revoke`: publish on the cache-sync exchanges (pika, loaded when one of them runs)."""
    import typer

    @commands.command(context_settings=PASS_THROUGH, add_help_option=False)
    def catalog(ctx: typer.Context) -> None:
        """The character catalog every replica holds: `eco2 catalog push FILE` publishes a new version."""
        from eco2_tools.publish_cli import catalog_commands

        catalog_commands()(args=list(ctx.args), prog_name="eco2 catalog")

    @commands.command(context_settings=PASS_THROUGH, add_help_option=False)
    def revoke(ctx: typer.Context) -> None:
        """Revoke a token or a user's tokens everywhere: `eco2 revoke --jti JTI [--user U] | --user USER`."""
        from eco2_tools import publish_cli

        app = typer.Typer(add_completion=False)
        app.command()(publish_cli.revoke)
        app(args=list(ctx.args), prog_name="eco2 revoke")


def _pack_commands(commands: "typer.Typer") -> None:
    """`up`, `status`, `down`, `demo`: the whole pack on this machine (eco2_tools.local)."""
    import typer

    @commands.command()
    def up(
        detach: bool = typer.Option(False, "--detach", "-d", help="run in the background; return once ready"),
        manifests: str = typer.Option(
            "",
            "--manifests",
            help="an overlay (deploy/overlays/prod), a rendered file, or a checkout; default: knative/ and eventing/"
            " ($ECO2_MANIFESTS)",
        ),
    ) -> None:
        """Start the whole pack on this machine from knative/ and eventing/, over the local Redis and RabbitMQ."""
        from pathlib import Path

        from eco2_tools.local import control

        if manifests:  # through the environment, so a detached runner reads the same
            os.environ["ECO2_MANIFESTS"] = str(Path(manifests).resolve())
        options = control.default_options()
        raise typer.Exit(control.up_detached(options) if detach else control.up_foreground(options))

    @commands.command()
    def status(as_json: bool = typer.Option(False, "--json", help="print the running endpoints as JSON")) -> None:
        """Which functions run where, replicas, queue depths and dead letters."""
        from eco2_tools.local import control

        raise typer.Exit(control.status(control.default_options(), as_json))

    @commands.command()
    def down(
        purge: bool = typer.Option(
            False, "--purge", help="also remove the pack's queues and exchanges (and the events still in them)"
        ),
    ) -> None:
        """Stop the pack started with `eco2 up --detach`; its queues stay on RabbitMQ unless --purge."""
        from eco2_tools.local import control

        raise typer.Exit(control.down(control.default_options(), purge=purge))

    @commands.command()
    def demo(
        sample: str = typer.Option("clear_pet_bottle", help="a stand-in sample image name"),
        text: str = typer.Option("다 마신 생수병이에요", help="the user's text"),
        timeout: float = typer.Option(60.0, help="seconds to wait for the result"),
    ) -> None:
        """Send one sample scan into the running pack and print its progress and answer."""
        import asyncio

        from eco2_tools.local import control
        from eco2_tools.local.demo import run_demo

        state = control.read_state(control.default_options())
        if state is None:
            typer.echo("the pack is not running: start it with `eco2 up --detach`", err=True)
            raise typer.Exit(1)
        raise typer.Exit(asyncio.run(run_demo(state, sample, text, timeout)))


if __name__ == "__main__":
    import sys

    run(sys.argv[1:])
