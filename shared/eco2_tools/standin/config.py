"""Settings of the stand-in model server: latencies and fault shares, read once from a mapping."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eco2.env import SettingsError, env_float, env_int

# Module constants, not class attributes: a slots dataclass replaces its defaults with slot descriptors.
_VISION_LATENCY = 3.5
_ANSWER_LATENCY = 7.0
_HANG_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class StandinConfig:
    """Latencies are in seconds and multiplied by latency_scale; fault shares are probabilities per call."""

    vision_latency: float = _VISION_LATENCY
    answer_latency: float = _ANSWER_LATENCY
    latency_scale: float = 1.0
    fault_429: float = 0.0
    fault_500: float = 0.0
    fault_hang: float = 0.0
    hang_seconds: float = _HANG_SECONDS
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("vision_latency", "answer_latency", "latency_scale", "hang_seconds"):
            if getattr(self, field) < 0:
                raise SettingsError(f"{field} must not be negative")
        for field in ("fault_429", "fault_500", "fault_hang"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise SettingsError(f"{field} must be between 0 and 1")
        if self.fault_429 + self.fault_500 + self.fault_hang > 1.0:
            raise SettingsError("the fault shares must not add up to more than 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StandinConfig:
        return cls(
            vision_latency=env_float(env, "STANDIN_VISION_LATENCY", _VISION_LATENCY),
            answer_latency=env_float(env, "STANDIN_ANSWER_LATENCY", _ANSWER_LATENCY),
            latency_scale=env_float(env, "STANDIN_LATENCY_SCALE", 1.0),
            fault_429=env_float(env, "STANDIN_FAULT_429", 0.0),
            fault_500=env_float(env, "STANDIN_FAULT_500", 0.0),
            fault_hang=env_float(env, "STANDIN_FAULT_HANG", 0.0),
            hang_seconds=env_float(env, "STANDIN_HANG_SECONDS", _HANG_SECONDS),
            seed=env_int(env, "STANDIN_SEED", 0),
        )

    def latency(self, kind: str) -> float:
        """Seconds to wait before answering a call of this kind (vision, answer, other)."""
        base = self.vision_latency if kind == "vision" else self.answer_latency
        return base * self.latency_scale

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
