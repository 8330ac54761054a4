"""Overlays (deploy/overlays/*) rendered by the real kustomize, as `kubectl apply -k` would render them.

kubectl carries kustomize (`kubectl kustomize DIR`), and this machine's kind ships kubectl; a standalone
`kustomize build DIR` is used first when installed. No renderer of our own: the overlays use strategic-merge
and JSON 6902 patches on Knative kinds, generators and the images transformer, whose exact semantics only the
real tool has.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from eco2_tools.manifests.documents import KUSTOMIZATION_NAMES, ManifestError

__all__ = ["is_kustomization", "render"]

RENDER_TIMEOUT_SECONDS = 60.0


def is_kustomization(directory: Path) -> bool:
    return directory.is_dir() and any((directory / name).is_file() for name in KUSTOMIZATION_NAMES)


def _command(directory: Path) -> list[str]:
    kustomize = shutil.which("kustomize")
    if kustomize is not None:
        return [kustomize, "build", str(directory)]
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize", str(directory)]
    raise ManifestError(directory, "", "rendering an overlay needs kubectl (it carries kustomize) or kustomize on PATH")


def render(directory: Path) -> str:
    """The overlay's objects as one multi-document YAML text; a ManifestError with kustomize's own message."""
    command = _command(directory)
    try:
        rendered = subprocess.run(  # noqa: S603 (a program found on PATH, given a directory: no shell)
            command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise ManifestError(directory, "", f"{' '.join(command)} took over {RENDER_TIMEOUT_SECONDS:.0f}s") from None
    if rendered.returncode != 0:
        raise ManifestError(directory, "", f"{' '.join(command[:2])} failed: {rendered.stderr.strip()}")
    return rendered.stdout
