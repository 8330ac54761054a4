"""Injected failures of the stand-in: random shares from the config plus a queue set by tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eco2_tools.standin.config import StandinConfig


class Fault(StrEnum):
    RATE_LIMITED = "429"
    SERVER_ERROR = "500"
    HANG = "hang"


@dataclass(slots=True)
class _Pending:
    remaining: int
    fault: Fault
    kind: str | None


class FaultPlan:
    """Decides, once per call and before it is answered, whether the call fails and how."""

    def __init__(self, config: StandinConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._pending: list[_Pending] = []

    def configure(self, config: StandinConfig) -> None:
        if config.seed != self._config.seed:
            self._rng.seed(config.seed)
        self._config = config

    def fail_next(self, count: int, fault: Fault, kind: str | None) -> None:
        if count > 0:
            self._pending.append(_Pending(count, fault, kind))

    def clear(self) -> None:
        """Drops the queued faults and restarts the random sequence, so a run after a reset repeats."""
        self._pending.clear()
        self._rng.seed(self._config.seed)

    def pending(self) -> list[dict[str, Any]]:
        return [{"remaining": p.remaining, "status": str(p.fault), "kind": p.kind} for p in self._pending]

    def draw(self, kind: str) -> Fault | None:
        # Queued faults first: tests rely on exactly the next N matching calls failing.
        for pending in self._pending:
            if pending.kind is None or pending.kind == kind:
                pending.remaining -= 1
                if pending.remaining <= 0:
                    self._pending.remove(pending)
                return pending.fault
        config = self._config
        if config.fault_429 + config.fault_500 + config.fault_hang <= 0.0:
            return None
        roll = self._rng.random()
        if roll < config.fault_429:
            return Fault.RATE_LIMITED
        if roll < config.fault_429 + config.fault_500:
            return Fault.SERVER_ERROR
        if roll < config.fault_429 + config.fault_500 + config.fault_hang:
            return Fault.HANG
        return None
