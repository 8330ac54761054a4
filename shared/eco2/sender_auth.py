"""The pack's sender credential: what the gateway and replay attach to every event they put on the broker.

In a cluster the credential is the pod's projected ServiceAccount token (an OIDC JWT whose audience is the broker),
named by `ECO2_EVENT_TOKEN_FILE`: the kubelet rotates the file, so it is read again when it changes, and Knative
Eventing's broker checks it against the namespace's EventPolicy. Locally `eco2 up` gives every function one
random token per pack in `ECO2_EVENT_TOKEN`, and the runner's ingress refuses events without it the same way.
Neither set: no header (a bare development process curl'd by hand, or a cluster without sender authentication).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from eco2.env import SettingsError

TOKEN_ENV = "ECO2_EVENT_TOKEN"  # noqa: S105 (the variable's name, not a secret)
TOKEN_FILE_ENV = "ECO2_EVENT_TOKEN_FILE"  # noqa: S105 (a variable's name)
MIN_TOKEN_LENGTH = 32  # a shared secret shorter than this is guessable; refuse to start with it


class SenderCredential:
    """The Authorization header of one sending process (`headers()`), cheap enough to call per event."""

    def __init__(self, token: str | None = None, token_file: Path | None = None) -> None:
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise SettingsError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters")
        self._token = token
        self._file = token_file
        self._file_stamp: tuple[int, int] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SenderCredential:
        source = os.environ if env is None else env
        path = (source.get(TOKEN_FILE_ENV) or "").strip()
        token = (source.get(TOKEN_ENV) or "").strip() or None
        return cls(token=token, token_file=Path(path) if path else None)

    def headers(self) -> dict[str, str]:
        token = self._current()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _current(self) -> str | None:
        if self._file is None:
            return self._token
        try:
            stat = self._file.stat()
        except OSError:
            return self._token  # not mounted (yet): what the environment gave, if anything
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._file_stamp:
            self._token = self._file.read_text(encoding="utf-8").strip() or None
            self._file_stamp = stamp
        return self._token


def presented(authorization: str | None, expected: str) -> bool:
    """Whether an Authorization header carries `expected` as its bearer token (constant-time compare)."""
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode())
