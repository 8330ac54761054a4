"""Stand-in model server: plays the vision and language model in tests and benchmarks. Not a real model."""

from __future__ import annotations

import sys

from eco2_tools.standin.config import StandinConfig

__all__ = ["StandinConfig", "run"]


def run(host: str, port: int, config: StandinConfig) -> None:
    """Serves the stand-in with uvicorn until interrupted."""
    # Imported here so that importing the package (e.g. for its samples) does not pull in the web stack.
    import uvicorn

    from eco2_tools.standin.server import WARNING_LINE, create_app

    print(f"{WARNING_LINE} (http://{host}:{port}/v1)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
