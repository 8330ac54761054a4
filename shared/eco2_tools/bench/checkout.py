"""The bench starts the pack from the source checkout's manifests and functions (eco2.serving.project_root)."""

from __future__ import annotations

from eco2.serving import project_root


class NoCheckout(RuntimeError):
    """`eco2 bench` needs the source checkout (knative/, eventing/, functions/), not just the packages."""


def require_checkout() -> None:
    root = project_root()
    missing = [name for name in ("knative", "eventing", "functions") if not (root / name).is_dir()]
    if missing:
        raise NoCheckout(f"no {', '.join(missing)} under {root}: run eco2 bench from the project's checkout")
