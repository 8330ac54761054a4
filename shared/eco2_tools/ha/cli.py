"""`eco2 ha up|down|env` (also `python -m eco2_tools.ha`): the HA set on this machine for tests and fault runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eco2_tools.ha.cluster import (
    DEFAULT_AMQP_PORT,
    DEFAULT_DIST_PORT,
    DEFAULT_REDIS_PORT,
    DEFAULT_SENTINEL_PORT,
    PARTS,
    HaSet,
    default_directory,
)
from eco2_tools.ha.supervision import SetError

DIRECTORY = typer.Option(None, "--dir", help="the set's directory (default: $ECO2_HA_DIR or /tmp/eco2-ha-<uid>)")


def commands() -> typer.Typer:
    app = typer.Typer(
        help="A Redis primary, replica and three Sentinels, and three clustered RabbitMQ nodes, on this machine.",
        no_args_is_help=True,
    )

    @app.command()
    def up(
        directory: Path | None = DIRECTORY,
        redis_port: int = typer.Option(DEFAULT_REDIS_PORT, help="the primary's port; the replica's is the next"),
        sentinel_port: int = typer.Option(DEFAULT_SENTINEL_PORT, help="the first Sentinel's; the others follow"),
        amqp_port: int = typer.Option(DEFAULT_AMQP_PORT, help="the first RabbitMQ node's; the others follow"),
        dist_port: int = typer.Option(DEFAULT_DIST_PORT, help="the first node's Erlang distribution port"),
        only: str = typer.Option("", help="start only `redis` or only `rabbit`"),
    ) -> None:
        """Start the set and print the settings that point the pack at it."""
        if only and only not in PARTS:
            raise typer.BadParameter(f"--only is one of {', '.join(PARTS)}")
        ha = HaSet(
            directory or default_directory(),
            redis_port=redis_port,
            sentinel_port=sentinel_port,
            amqp_port=amqp_port,
            dist_port=dist_port,
            parts=(only,) if only else PARTS,
        )
        try:
            ha.up()
        except SetError as error:
            typer.echo(f"the HA set did not start: {error} (logs were in {ha.directory})", err=True)
            raise typer.Exit(1) from None
        _print_environment(ha)

    @app.command()
    def env(directory: Path | None = DIRECTORY, as_json: bool = typer.Option(False, "--json")) -> None:
        """The settings of the running set (`export $(eco2 ha env)`)."""
        ha = _running(directory)
        if as_json:
            typer.echo(json.dumps(ha.environment()))
        else:
            _print_environment(ha)

    @app.command()
    def down(directory: Path | None = DIRECTORY) -> None:
        """Stop every server of the set and remove its directory."""
        ha = HaSet.running(directory or default_directory())
        if ha is None:
            typer.echo("no HA set runs there")
            return
        typer.echo(f"stopped: {', '.join(ha.down()) or 'nothing was running'}")

    return app


def _running(directory: Path | None) -> HaSet:
    ha = HaSet.running(directory or default_directory())
    if ha is None:
        typer.echo("no HA set runs there: start it with `eco2 ha up`", err=True)
        raise typer.Exit(1)
    return ha


def _print_environment(ha: HaSet) -> None:
    for name, value in ha.environment().items():
        typer.echo(f"{name}={value}")
