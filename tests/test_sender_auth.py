"""The pack's sender credential: the header a sender attaches, a rotated token file, and the ingress's check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eco2.env import SettingsError
from eco2.sender_auth import SenderCredential, presented

TOKEN = "a-sender-credential-of-32-characters-at-least"


def test_the_environment_token_is_presented_as_a_bearer_header() -> None:
    assert SenderCredential.from_env({"ECO2_EVENT_TOKEN": TOKEN}).headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert SenderCredential.from_env({}).headers() == {}


def test_a_short_token_is_refused_at_start_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="ECO2_EVENT_TOKEN"):
        SenderCredential.from_env({"ECO2_EVENT_TOKEN": "short"})


def test_a_rotated_token_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    credential = SenderCredential.from_env({"ECO2_EVENT_TOKEN_FILE": str(path)})
    assert credential.headers() == {"Authorization": "Bearer first-token"}
    path.write_text("the-rotated-token\n")
    os.utime(path, ns=(1, 10**18))  # the kubelet's swap changes the file's time; make sure this one differs
    assert credential.headers() == {"Authorization": "Bearer the-rotated-token"}


def test_a_missing_token_file_sends_no_header_until_it_appears(tmp_path: Path) -> None:
    credential = SenderCredential.from_env({"ECO2_EVENT_TOKEN_FILE": str(tmp_path / "not-yet")})
    assert credential.headers() == {}
    (tmp_path / "not-yet").write_text("mounted-now")
    assert credential.headers() == {"Authorization": "Bearer mounted-now"}


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        ("Bearer other", False),
        (None, False),
        (f"Basic {TOKEN}", False),
    ],
)
def test_the_ingress_check_accepts_only_the_packs_bearer_token(header: str | None, accepted: bool) -> None:
    assert presented(header, TOKEN) is accepted
