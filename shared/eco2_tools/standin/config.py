"""Settings of the stand-in model server: latencies, fault shares and provider limits, from STANDIN_* variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eco2.env import SettingsError

ENV_PREFIX = "STANDIN_"


class StandinConfig(BaseSettings):
    """Latencies are in seconds and multiplied by latency_scale; fault shares are probabilities per call.

    Limits are off at 0 (the default): requests_per_second and requests_per_minute are rolling windows,
    tokens_per_minute counts each call's prompt tokens over a rolling minute, max_concurrent caps calls in flight.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    vision_latency: float = Field(default=3.5, ge=0)
    answer_latency: float = Field(default=7.0, ge=0)
    latency_scale: float = Field(default=1.0, ge=0)
    fault_429: float = Field(default=0.0, ge=0, le=1)
    fault_500: float = Field(default=0.0, ge=0, le=1)
    fault_hang: float = Field(default=0.0, ge=0, le=1)
    hang_seconds: float = Field(default=120.0, ge=0)
    seed: int = 0
    requests_per_second: float = Field(default=0.0, ge=0)
    requests_per_minute: int = Field(default=0, ge=0)
    tokens_per_minute: int = Field(default=0, ge=0)
    max_concurrent: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fault_shares_fit(self) -> Self:
        if self.fault_429 + self.fault_500 + self.fault_hang > 1.0:
            raise ValueError("the fault shares must not add up to more than 1")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StandinConfig:
        """From a given mapping only (not os.environ), so tests and the CLI say exactly what they pass."""
        values = {
            key.removeprefix(ENV_PREFIX).lower(): value for key, value in env.items() if key.startswith(ENV_PREFIX)
        }
        return cls.validated(values)

    @classmethod
    def validated(cls, values: Mapping[str, Any]) -> StandinConfig:
        # model_validate skips BaseSettings' own reading of os.environ: only `values` count.
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            name = f"{ENV_PREFIX}{where.upper()}: " if where else ""
            raise SettingsError(f"{name}{first['msg']}") from None

    def changed(self, **changes: Any) -> StandinConfig:
        """A copy with some values changed, validated as a whole."""
        return self.validated({**self.as_dict(), **changes})

    def latency(self, kind: str) -> float:
        """Seconds to wait before answering a call of this kind (vision, answer, other)."""
        base = self.vision_latency if kind == "vision" else self.answer_latency
        return base * self.latency_scale

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()
