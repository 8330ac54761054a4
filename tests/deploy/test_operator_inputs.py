"""What an operator must provide, read from the rendered overlays: the Secret's keys per Service (RS256-only sign-in
included) and the PostgreSQL connection budget, and the tables of docs/operations.md equal to both."""

from __future__ import annotations

from pathlib import Path

import pytest

from eco2.gateway.settings import GatewaySettings
from eco2.settings import Settings
from eco2_tools.manifests.operator_inputs import (
    DOC,
    MEANINGS,
    OVERLAYS_DIR,
    POSTGRES_DEFAULT_CONNECTIONS,
    database_budget,
    document_with_tables,
    main,
    missing_keys,
    secret_keys,
    tables,
)
from tests.deploy.test_overlays import OVERLAYS, rendered

# A public key as an RS256 operator would store it (what the gateway checks at start is that one is set).
PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"


def _required_refs(overlay: str) -> dict[str, set[str]]:
    """Per Service, the keys of eco2-secrets its pods cannot start without."""
    needed: dict[str, set[str]] = {}
    for doc in rendered(overlay):
        if doc.kind != "Service" or doc.api_version != "serving.knative.dev/v1":
            continue  # Knative's Services only, not Kubernetes' own (the edge's authz-check)
        refs = [
            v["valueFrom"]["secretKeyRef"]
            for v in doc.body["spec"]["template"]["spec"]["containers"][0]["env"]
            if "secretKeyRef" in v.get("valueFrom", {})
        ]
        needed[doc.name] = {r["key"] for r in refs if not r.get("optional", False)}
    return needed


def test_the_docs_tables_are_the_overlays() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text == document_with_tables(text, tables()), (
        "run: .venv/bin/python -m eco2_tools.manifests.operator_inputs --write"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_key_an_overlay_references_is_explained(overlay: str) -> None:
    assert {key.key for key in secret_keys(rendered(overlay))} == MEANINGS.keys()


def test_both_overlays_ask_for_the_same_keys() -> None:
    assert secret_keys(rendered("dev")) == secret_keys(rendered("prod"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_rs256_only_secret_starts_every_service_and_signs_in(overlay: str) -> None:
    required = {key.key for key in secret_keys(rendered(overlay)) if key.required}
    secret = {key: "x" for key in required - {"ECO2_JWT_SECRET"}} | {"ECO2_JWT_PUBLIC_KEY": PUBLIC_KEY}
    assert "ECO2_JWT_SECRET" not in required
    missing = {service: keys - secret.keys() for service, keys in _required_refs(overlay).items()}
    assert {service: keys for service, keys in missing.items() if keys} == {}
    env = secret | {"ECO2_ENV": "production"}
    gateway = GatewaySettings.from_env(env, Settings.from_env(env, "gateway"))
    assert gateway.auth_problem is None
    assert gateway.jwt_public_key == PUBLIC_KEY


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_postgres_budget_fits_the_servers_default(overlay: str) -> None:
    rendered(overlay)  # kustomize present, or skipped the same way as the other overlay tests
    budgets = database_budget(OVERLAYS_DIR / overlay)
    assert {b.service for b in budgets} == {"gateway", "persist"}
    counts = [b.connections for b in budgets]
    assert None not in counts, "a Service with DATABASE_URL and no max-scale has no connection budget"
    assert sum(c for c in counts if c is not None) <= POSTGRES_DEFAULT_CONNECTIONS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_check_names_what_each_service_would_miss(overlay: str) -> None:
    documents = rendered(overlay)
    required = {key.key for key in secret_keys(documents) if key.required}
    assert missing_keys(documents, required | {"ECO2_JWT_PUBLIC_KEY"}) == {}
    assert missing_keys(documents, required) == {
        "authz": ["ECO2_JWT_SECRET | ECO2_JWT_PUBLIC_KEY"],
        "gateway": ["ECO2_JWT_SECRET | ECO2_JWT_PUBLIC_KEY"],
    }
    short = missing_keys(documents, (required - {"DATABASE_URL"}) | {"ECO2_JWT_SECRET"})
    assert short == {"gateway": ["DATABASE_URL"], "persist": ["DATABASE_URL"]}


def test_the_check_reads_the_env_file_the_secret_is_made_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered("prod")  # kustomize present, or skipped as the other overlay tests
    env_file = tmp_path / "eco2-secrets.env"
    env_file.write_text(
        "# prod\nREDIS_URL=rediss://:p@r:6380/0\nAMQP_URL=amqps://u:p@q/\n\nOPENAI_API_KEY=sk\n"
        "ECO2_JWT_PUBLIC_KEY=-----BEGIN PUBLIC KEY-----\\n...\n",
        encoding="utf-8",
    )
    assert main(["--check", str(env_file)]) == 1
    assert capsys.readouterr().out.splitlines() == ["gateway: DATABASE_URL", "persist: DATABASE_URL"]
    env_file.write_text(
        env_file.read_text(encoding="utf-8") + "DATABASE_URL=postgresql://e@db/eco2\n", encoding="utf-8"
    )
    assert main(["--check", str(env_file)]) == 0
