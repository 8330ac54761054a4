"""Manifest files read into YAML documents, and the one error every malformed manifest raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

__all__ = ["KUSTOMIZATION_NAMES", "Document", "ManifestError", "parse_documents", "read_documents", "read_file"]

KUSTOMIZATION_NAMES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})


class ManifestError(ValueError):
    """A manifest file or object the pack cannot use; the message names the file and the object."""

    def __init__(self, path: Path | str, obj: str, problem: str) -> None:
        self.path = str(path)
        self.obj = obj
        self.problem = problem
        where = f"{self.path}: {obj}" if obj else self.path
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document of a manifest file: where it came from and its body."""

    path: Path
    index: int  # position of the document in its file, 0-based, counting only non-empty documents
    body: dict[str, Any] = field(hash=False)

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def metadata(self) -> dict[str, Any]:
        metadata = self.body.get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def identity(self) -> tuple[str, str, str]:
        """Kind, namespace and name: what Kubernetes allows once."""
        return self.kind, str(self.metadata.get("namespace", "")), self.name

    @property
    def label(self) -> str:
        """`Kind/name`, as error messages name the object."""
        return f"{self.kind or '?'}/{self.name or '?'}"

    def fail(self, problem: str) -> NoReturn:
        raise ManifestError(self.path, self.label, problem)


def read_documents(directory: Path) -> list[Document]:
    """Every non-empty YAML document in `directory/*.yaml|*.yml`, by file name; kustomizations skipped."""
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and p.name not in KUSTOMIZATION_NAMES
    )
    documents: list[Document] = []
    for path in files:
        documents.extend(read_file(path))
    return documents


def read_file(path: Path) -> list[Document]:
    """Every non-empty YAML document of one file."""
    return parse_documents(path, _read(path))


def parse_documents(path: Path, text: str) -> list[Document]:
    """Every non-empty YAML document of `text`, named as coming from `path` (a file, or a rendered overlay)."""
    try:
        bodies = [body for body in yaml.safe_load_all(text) if body is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(path, "", f"not valid YAML: {exc}") from None
    return [_document(path, index, body) for index, body in enumerate(bodies)]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, "", f"cannot read: {exc}") from None


def _document(path: Path, index: int, body: object) -> Document:
    """A document whose apiVersion, kind and metadata.name are non-empty strings; the rest is checked later."""
    if not isinstance(body, dict):
        raise ManifestError(path, f"document {index}", "is not a mapping")
    doc = Document(path=path, index=index, body=body)
    for key in ("apiVersion", "kind"):
        if not isinstance(body.get(key), str) or not body[key]:
            doc.fail(f"{key} is missing or not a string")
    name = body.get("metadata", {}).get("name") if isinstance(body.get("metadata"), dict) else None
    if not isinstance(name, str) or not name:
        doc.fail("metadata.name is missing or not a string")
    return doc
