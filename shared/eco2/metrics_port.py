"""Prometheus metrics on a port of their own (ECO2_METRICS_PORT), never on a function's public HTTP port.

The public port is the one Knative routes (the gateway's faces the internet through the ingress); a function's
metrics name its traffic, errors and queues, which are the operator's to read. The scraper reaches the metrics port
on the pod's own address (deploy/monitoring/podmonitor.yaml), which neither the route, the activator nor the
queue-proxy forwards to: Knative allows one container port for traffic, and this one is not it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.registry import Collector

from eco2.env import env_int

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

METRICS_PORT_ENV = "ECO2_METRICS_PORT"
# What knative/*.yaml set. Not 9090 or 9091: Knative's queue-proxy listens there, in the same pod's network.
SERVICE_METRICS_PORT = 9464


class MetricsPortError(ValueError):
    """ECO2_METRICS_PORT is the public port: the metrics would be public again."""


def metrics_port(env: Mapping[str, str], public_port: int) -> int:
    """The port to serve /metrics on; 0 (unset) serves none, as `eco2 serve` run by hand on a laptop."""
    port = env_int(env, METRICS_PORT_ENV, 0, minimum=0)
    if port and port == public_port:
        raise MetricsPortError(f"{METRICS_PORT_ENV}={port} is the public port; give the metrics a port of their own")
    return port


class CurrentRegistry(Collector):
    """The function's registry as it is at each scrape: the gateway builds its own only once it has started."""

    def __init__(self, registry: Callable[[], Collector | None]) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        registry = self._registry()
        return registry.collect() if registry is not None else ()


def serve_metrics(registry: Callable[[], Collector | None], *, host: str, port: int) -> WSGIServer:
    """GET /metrics on `host:port`, from a thread of its own (prometheus_client's server: a scrape never waits on
    the event loop, and a busy loop never delays a scrape). A port already taken fails the start."""
    server, _ = start_http_server(port, addr=host, registry=CurrentRegistry(registry))
    return server
