"""What an operator must provide for an overlay, read from its rendered objects: the Secret's keys per Service, and
the PostgreSQL connections its Services may open at most.

`python -m eco2_tools.manifests.operator_inputs --write` puts both tables into docs/operations.md; a test
(tests/deploy/test_operator_inputs.py) keeps them equal to what the overlays render. `--check FILE` reads the env
file a Secret is made from (`kubectl create secret generic eco2-secrets --from-env-file=FILE`) and names what a
Service would miss, before a pod fails to start for it.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eco2.persist.store import PersistSettings
from eco2_tools.manifests.documents import Document, parse_documents
from eco2_tools.manifests.kustomize import render
from eco2_tools.manifests.loader import Manifests
from eco2_tools.manifests.specs import SERVING_API

__all__ = [
    "DatabaseBudget",
    "SecretKey",
    "database_budget",
    "document_with_tables",
    "rendered",
    "secret_keys",
]

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS_DIR = ROOT / "deploy" / "overlays"
DOC = ROOT / "docs" / "operations.md"
SECRET = "eco2-secrets"  # noqa: S105  the Secret's name, not a secret
CONFIG_MAP = "eco2-config"
# The overlay whose Secret an operator writes by hand (dev generates its own).
SECRET_OVERLAY = "prod"  # noqa: S105  an overlay's name
POOL_SIZE_SETTING = "ECO2_PERSIST_POOL_SIZE"
# PostgreSQL's default max_connections, less its superuser_reserved_connections (3): what the pack's role may use.
POSTGRES_DEFAULT_CONNECTIONS = 100 - 3

# What each key holds, for the table; a key the overlays reference without an entry here fails the docs' test.
MEANINGS = {
    "REDIS_URL": "job state, streams, caches: `rediss://:PASSWORD@redis.example:6380/0`",
    "AMQP_URL": "the cache-sync consumers' RabbitMQ: `amqps://eco2:PASSWORD@rabbitmq.rabbitmq-system.svc:5671/%2F`",
    "DATABASE_URL": "persist writes the rewards, the gateway reads them: "
    "`postgresql://eco2:PASSWORD@postgres:5432/eco2?sslmode=verify-full`",
    "OPENAI_API_KEY": "the model provider's key",
    "ECO2_JWT_SECRET": "the bearer tokens' HS256 key (32 bytes or more); "
    "**one of this and `ECO2_JWT_PUBLIC_KEY` is needed**, without either every token is refused (401)",
    "ECO2_JWT_PUBLIC_KEY": "the bearer tokens' RS256 public key (PEM; a one-line value may use `\\n`)",
    "ECO2_JWT_PREVIOUS_SECRET": "only while rotating the HS256 key",
    "ECO2_JWT_PREVIOUS_PUBLIC_KEY": "only while rotating the RS256 key",
    "ECO2_REDIS_CACHE_URL": "the caches' own Redis (default: `REDIS_URL`'s)",
    "AWS_ACCESS_KEY_ID": "the photo store's key, when `S3_ENDPOINT_URL` / `ECO2_S3_BUCKET` are set (eco2-config)",
    "AWS_SECRET_ACCESS_KEY": "its secret",
}

# Keys of which a Service needs one, though Kubernetes can only reference each as optional.
ONE_OF = (("ECO2_JWT_SECRET", "ECO2_JWT_PUBLIC_KEY"),)

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SecretKey:
    key: str
    services: tuple[str, ...]
    # A secretKeyRef without `optional: true`: the Services' pods do not start while the key is missing.
    required: bool


@dataclass(frozen=True, slots=True)
class DatabaseBudget:
    service: str
    max_scale: int  # 0: unbounded (Knative's meaning), which no budget can cover
    pool_size: int

    @property
    def connections(self) -> int | None:
        return self.max_scale * self.pool_size if self.max_scale else None


def rendered(overlay: str) -> tuple[Document, ...]:
    """The overlay's objects as `kubectl apply -k` renders them."""
    directory = OVERLAYS_DIR / overlay
    return tuple(parse_documents(directory / "kustomization.yaml", render(directory)))


def _container(service: Body) -> Body:
    container: Body = service["spec"]["template"]["spec"]["containers"][0]
    return container


def _services(documents: Iterable[Document]) -> list[Body]:
    """The Knative Services (not Kubernetes' own, such as the edge's authz-check)."""
    return [d.body for d in documents if d.kind == "Service" and d.api_version == SERVING_API]


def secret_keys(documents: Iterable[Document], secret: str = SECRET) -> list[SecretKey]:
    """Every key of `secret` a Service references, with the Services; required if any reference is."""
    services: dict[str, set[str]] = defaultdict(set)
    required: dict[str, bool] = defaultdict(bool)
    for service in _services(documents):
        for var in _container(service).get("env", []):
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None or ref.get("name") != secret:
                continue
            services[ref["key"]].add(service["metadata"]["name"])
            required[ref["key"]] |= not ref.get("optional", False)
    return [
        SecretKey(key, tuple(sorted(services[key])), required[key])
        for key in sorted(services, key=lambda k: (not required[k], k))
    ]


def missing_keys(documents: Iterable[Document], present: set[str]) -> dict[str, list[str]]:
    """Per Service, what a Secret holding the keys `present` leaves it without: a required key, or none of a
    ONE_OF group it references (shown as `A | B`)."""
    keys = secret_keys(documents)
    needs: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        if key.required and key.key not in present:
            for service in key.services:
                needs[service].append(key.key)
    for group in ONE_OF:
        if present & set(group):
            continue
        for service in sorted({service for key in keys if key.key in group for service in key.services}):
            needs[service].append(" | ".join(group))
    return dict(sorted(needs.items()))


def env_file_keys(path: Path) -> set[str]:
    """The keys of an env file as kubectl's --from-env-file reads it (KEY=value lines; # comments, blanks)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.partition("=")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def database_budget(directory: Path) -> list[DatabaseBudget]:
    """Each Service given DATABASE_URL: its max-scale and its pool, the literal env's, else the ConfigMap's, else
    persist's default (eco2.persist.store.PersistSettings, which the gateway's history reader shares)."""
    manifests = Manifests.load(directory)
    readers = {s for key in secret_keys(manifests.documents) if key.key == "DATABASE_URL" for s in key.services}
    shared = manifests.config_maps.get(CONFIG_MAP, {})
    budgets = []
    for name in sorted(readers):
        service = manifests.services[name]
        pool = service.env.get(POOL_SIZE_SETTING) or shared.get(POOL_SIZE_SETTING) or PersistSettings.pool_size
        budgets.append(DatabaseBudget(name, service.max_scale, int(pool)))
    return budgets


def _services_cell(services: tuple[str, ...], every: set[str]) -> str:
    return "every function" if set(services) == every else ", ".join(services)


def secret_table(documents: tuple[Document, ...]) -> str:
    every = {s["metadata"]["name"] for s in _services(documents)}
    lines = ["| key | required | Services | what |", "|---|---|---|---|"]
    for key in secret_keys(documents):
        required = "yes" if key.required else "no"
        lines.append(f"| `{key.key}` | {required} | {_services_cell(key.services, every)} | {MEANINGS[key.key]} |")
    return "\n".join(lines)


def budget_table(overlays: Iterable[str]) -> str:
    lines = [
        f"| overlay | Service | max-scale | pool (`{POOL_SIZE_SETTING}`) | connections at most |",
        "|---|---|---|---|---|",
    ]
    for overlay in overlays:
        budgets = database_budget(OVERLAYS_DIR / overlay)
        for b in budgets:
            most = "unbounded" if b.connections is None else str(b.connections)
            lines.append(f"| {overlay} | {b.service} | {b.max_scale or 'unbounded'} | {b.pool_size} | {most} |")
        lines.append(f"| {overlay} | **all** | | | **{_total(budgets)}** |")
    return "\n".join(lines)


def _total(budgets: list[DatabaseBudget]) -> str:
    counts = [b.connections for b in budgets]
    return "unbounded" if None in counts else str(sum(c for c in counts if c is not None))


def _marks(name: str) -> tuple[str, str]:
    return (
        f"<!-- {name}: generated by `python -m eco2_tools.manifests.operator_inputs --write` -->",
        f"<!-- end of the {name} -->",
    )


def tables() -> dict[str, str]:
    overlays = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())
    return {
        "secret keys table": secret_table(rendered(SECRET_OVERLAY)),
        "database budget table": budget_table(overlays),
    }


def document_with_tables(text: str, generated: dict[str, str]) -> str:
    """`text` (docs/operations.md) with the part between each table's markers replaced by the table."""
    for name, table in generated.items():
        begin, end = _marks(name)
        head, found, rest = text.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise ValueError(f"{DOC.name} has no markers for the {name}")
        text = f"{head}{begin}\n{table}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite the tables in {DOC}")
    parser.add_argument("--check", type=Path, metavar="ENV_FILE", help="what a Secret made from ENV_FILE lacks")
    parser.add_argument("--overlay", default=SECRET_OVERLAY, help="the overlay --check reads (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check is not None:
        return _check(args.check, args.overlay)
    generated = tables()
    if not args.write:
        print("\n\n".join(generated.values()))
        return 0
    DOC.write_text(document_with_tables(DOC.read_text(encoding="utf-8"), generated), encoding="utf-8")
    return 0


def _check(env_file: Path, overlay: str) -> int:
    missing = missing_keys(rendered(overlay), env_file_keys(env_file))
    for service, keys in missing.items():
        print(f"{service}: {', '.join(keys)}")
    if not missing:
        print(f"{env_file}: every Service of the {overlay} overlay has the keys it needs")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
