"""`eco2 serve NAME`: one function from `functions/<name>/main.py`, on functions-framework's ASGI variant under uvicorn.

This is the container command of every Knative Service, so it imports only what the named function needs:
no CLI framework, no local runtime, no stand-in, no manifest parser (`eco2_tools.cli` hands `serve` straight here).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from eco2.adapter import ServedFunction

FUNCTION_TARGET = "handle_http"
# Below Kubernetes' default 30 s grace period; a revision with a shorter timeoutSeconds (authz) sets its own.
DEFAULT_SHUTDOWN_GRACE_SECONDS = 25


class UnknownFunction(LookupError):
    """No `functions/<name>/main.py` exists, or it defines no `function` to serve."""


def project_root() -> Path:
    """Where `functions/` lives: $ECO2_ROOT, else the source checkout this package was installed from."""
    configured = os.environ.get("ECO2_ROOT")
    if configured:
        return Path(configured).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "functions").is_dir():
        return checkout
    return Path.cwd()


def function_names(root: Path | None = None) -> list[str]:
    base = (root or project_root()) / "functions"
    return sorted(p.parent.name for p in base.glob("*/main.py"))


def function_source(name: str, root: Path | None = None) -> Path:
    source = (root or project_root()) / "functions" / name / "main.py"
    if not source.is_file():
        known = ", ".join(function_names(root)) or "none"
        raise UnknownFunction(f"no function {name!r} (known: {known})")
    return source.resolve()


def _loaded_module(source: Path) -> ModuleType:
    """The module functions-framework just executed from `source` (it registers it in sys.modules)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(source):
            return module
    raise UnknownFunction(f"{source} was not loaded as a module")


def _served_function(module: ModuleType, source: Path) -> ServedFunction:
    function = getattr(module, "function", None)
    if not isinstance(getattr(function, "name", None), str) or not all(
        callable(getattr(function, method, None)) for method in ("start", "stop")
    ):
        raise UnknownFunction(f"{source} defines no `function` with a name, start() and stop()")
    return cast("ServedFunction", function)


def load_function(name: str, root: Path | None = None) -> tuple[ASGIApp, ServedFunction]:
    """The function's ASGI app (wrapped so its resources are built at start) and its function object.

    The app comes from functions-framework's public `create_asgi_app` (the `handle_http` http target), exactly
    what `functions-framework --asgi --target handle_http --source …/main.py` serves.
    """
    from functions_framework.aio import create_asgi_app

    from eco2.adapter import Lifespan

    source = function_source(name, root)
    app: ASGIApp = create_asgi_app(FUNCTION_TARGET, str(source), signature_type="http")  # type: ignore[no-untyped-call]
    function = _served_function(_loaded_module(source), source)
    return Lifespan(app, function), function


def shutdown_grace_seconds(env: Mapping[str, str]) -> int:
    """How long in-flight requests may run on after SIGTERM: keep it below the pod's terminationGracePeriodSeconds
    (Knative sets that to the revision's timeoutSeconds), or the kubelet's SIGKILL cuts them first."""
    from eco2.env import env_int

    return env_int(env, "ECO2_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS, minimum=0)


def serve(name: str, *, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then drain: stop listening and refuse new deliveries (readiness 503), let the
    requests in flight finish within the grace period, close the function's connections, exit 0. The metrics go
    on ECO2_METRICS_PORT when it is set (eco2.metrics_port), never on `port`."""
    import uvicorn

    from eco2.metrics_port import metrics_port, serve_metrics

    app, function = load_function(name)
    scrape_port = metrics_port(os.environ, port)
    if scrape_port:
        serve_metrics(function.metrics_registry, host=host, port=scrape_port)
        print(f"metrics of {name} on http://{host}:{scrape_port}/metrics", flush=True)
    loop, http = ("uvloop", "httptools") if getattr(function, "fast_http", False) else ("asyncio", "h11")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=shutdown_grace_seconds(os.environ),
    )

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            drain = getattr(function, "drain", None)
            if callable(drain):
                drain()
            super().handle_exit(sig, frame)

    # uvicorn re-raises the signal it stopped on once it is done; a handler that returns makes a drained stop
    # exit 0 (Kubernetes reads a clean stop), instead of dying of SIGTERM after the work is finished.
    signal.signal(signal.SIGTERM, _stopped)
    DrainingServer(config).run()


def _stopped(sig: int, frame: FrameType | None) -> None:
    print(f"stopped on {signal.Signals(sig).name}, in-flight requests finished", file=sys.stderr, flush=True)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="eco2 serve", description="Serve one function on its own port, as Knative would: POST it a CloudEvent."
    )
    parser.add_argument("name", help="function folder under functions/, e.g. vision")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="address to listen on ($HOST)")
    parser.add_argument("--port", type=int, default=os.environ.get("PORT", "8080"), help="port to listen on ($PORT)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """`eco2 serve NAME [--host H] [--port P]` (also `python -m eco2.serving NAME`)."""
    args = _arguments(argv)
    try:
        function_source(args.name)
    except UnknownFunction as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from eco2.metrics_port import MetricsPortError

    where = f"http://{args.host}:{args.port}/"
    print(f"serving function {args.name} on {where} (POST a CloudEvent; GET /healthz, /readyz)", flush=True)
    try:
        serve(args.name, host=args.host, port=args.port)
    except MetricsPortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
