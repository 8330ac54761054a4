"""Serve one function from `functions/<name>/main.py` with functions-framework's ASGI variant under uvicorn."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import uvicorn
from functions_framework import _function_registry
from functions_framework.aio import create_asgi_app_from_module
from starlette.types import ASGIApp

from eco2.adapter import EventFunction, Lifespan

FUNCTION_TARGET = "handle_http"


class UnknownFunction(LookupError):
    """No `functions/<name>/main.py` exists."""


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
    return source


def load_function(name: str, root: Path | None = None) -> tuple[ASGIApp, EventFunction[Any]]:
    """The function's ASGI app (wrapped so its resources are built at start) and its function object."""
    source = str(function_source(name, root))
    module, spec = _function_registry.load_function_module(source)  # type: ignore[no-untyped-call]
    spec.loader.exec_module(module)
    function = getattr(module, "function", None)
    if not isinstance(function, EventFunction):
        raise UnknownFunction(f"{source} defines no `function = EventFunction(...)`")
    app = create_asgi_app_from_module(FUNCTION_TARGET, source, "http", module, spec)  # type: ignore[no-untyped-call]
    return Lifespan(app, function), function


def serve(name: str, *, host: str, port: int) -> None:
    app, function = load_function(name)
    loop, http = ("uvloop", "httptools") if function.fast_http else ("asyncio", "h11")
    uvicorn.run(app, host=host, port=port, loop=loop, http=http, log_level="warning", access_log=False, lifespan="on")


def main(argv: list[str]) -> int:
    """`python -m eco2.serving NAME`: what `eco2 serve NAME` does, without loading the CLI (faster cold starts)."""
    if len(argv) != 1:
        print("usage: python -m eco2.serving NAME  (PORT and HOST from the environment)", file=sys.stderr)
        return 2
    try:
        function_source(argv[0])
    except UnknownFunction as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(argv[0], host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8080")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
