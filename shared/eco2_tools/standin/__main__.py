"""`python -m eco2_tools.standin`: serves the stand-in model server, configured from STANDIN_* variables."""

from __future__ import annotations

import argparse
import os

from eco2_tools.standin import StandinConfig, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eco2_tools.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    run(args.host, args.port, StandinConfig.from_env(os.environ))


if __name__ == "__main__":
    main()
