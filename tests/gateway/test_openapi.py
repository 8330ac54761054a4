"""openapi.json is generated from the gateway's pydantic models, and the bodies the gateway builds match them."""

from __future__ import annotations

import json
from pathlib import Path

from eco2.gateway import models
from eco2.gateway.openapi import REPO_FILE, main, render
from eco2.rules import CharacterCatalog

JOB = {"status": "done", "stage": "done", "progress": "100", "message": "완료되었어요", "result": "{}"}


def test_the_committed_file_is_the_generated_one() -> None:
    assert REPO_FILE.read_text(encoding="utf-8") == render(), "regenerate: python -m eco2.gateway.openapi --write"


def test_the_generator_writes_the_document(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    main(["--write", str(target)])
    document = json.loads(target.read_text(encoding="utf-8"))
    assert set(document["components"]["schemas"]) == {
        "Category",
        "CharacterEntry",
        "CharacterList",
        "ErrorBody",
        "Health",
        "JobState",
        "ScanAccepted",
        "ScanProgress",
        "CapacityWait",
        "ScanRequest",
        "Readiness",
        "ScanResult",
        "ImageUploadRequest",
        "ImageUpload",
        "PresignedUpload",
        "ChatRequest",
        "ChatAccepted",
        "CharacterCollection",
        "OwnedCharacter",
        "ScanHistoryPage",
        "ScanHistoryEntry",
    }
    assert {"/api/v1/me/characters", "/api/v1/me/scans"} <= document["paths"].keys()
    categories = document["paths"]["/api/v1/scan/categories"]["get"]["responses"]["200"]
    assert categories["content"]["application/json"]["schema"]["type"] == "array"


def test_the_built_bodies_match_their_models() -> None:
    models.ScanAccepted.model_validate(models.accepted("job-1"))
    models.ScanProgress.model_validate(models.progress({**JOB, "status": "running"}))
    models.ScanResult.model_validate(models.final("job-1", JOB))
    models.CharacterList.model_validate(models.characters(0, CharacterCatalog.load()))
    models.JobState.model_validate(models.job_state("job-1", JOB))
