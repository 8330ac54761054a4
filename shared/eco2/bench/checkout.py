"""The bench reuses the benchmark helpers under tests/benchmarks: they live in the source checkout, as the
manifests and functions the pack starts from do (eco2.serving.project_root)."""

from __future__ import annotations

import sys

from eco2.serving import project_root


class NoCheckout(RuntimeError):
    """`eco2 bench` needs the source checkout (tests/benchmarks, knative/, eventing/), not just the package."""


def require_checkout() -> None:
    root = project_root()
    if not (root / "tests" / "benchmarks" / "harness.py").is_file():
        raise NoCheckout(f"no tests/benchmarks under {root}: run eco2 bench from the project's checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
