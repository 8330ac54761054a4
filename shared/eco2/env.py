"""Reading typed values from the environment: a bad value is a SettingsError that names its variable.

A leaf module: every settings class imports it, and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar


class SettingsError(ValueError):
    """A setting is present but unusable; the message names the variable."""


N = TypeVar("N", int, float)


def _env_number(env: Mapping[str, str], name: str, default: N, kind: type[N], minimum: N | None) -> N:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float | None = None) -> float:
    """A number from the environment, or the default when unset or empty; a bad value names its variable."""
    return _env_number(env, name, default, float, minimum)


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    """A whole number from the environment, as env_float."""
    return _env_number(env, name, default, int, minimum)
