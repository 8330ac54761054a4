"""Durations as the manifests write them: ISO-8601 for Eventing's delivery, Go's for Serving's annotations."""

from __future__ import annotations

import re

__all__ = ["parse_go_duration", "parse_iso8601_duration"]

_NUMBER = r"\d+(?:[.,]\d+)?"
# ISO-8601 durations as Knative accepts them for delivery (PT10S, PT0.05S, PT1M, P1DT2H, P1W). Years and
# months have no fixed length, so they are refused rather than guessed.
_ISO_DURATION = re.compile(
    rf"P(?:(?P<weeks>{_NUMBER})W)?(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?"
)
_ISO_UNIT_SECONDS = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
# Go durations as Knative reads its autoscaling annotations ("60s", "5m", "1m30s", "500ms").
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_iso8601_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as PT10S, PT0.05S, PT1M, PT1.5S, P1DT2H or P1W.

    Years and months are refused (no fixed length); so are negative and empty durations ("P", "PT").
    """
    match = _ISO_DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groupdict().values()) or text.strip().endswith("T"):
        raise ValueError(f"not an ISO-8601 duration (like PT10S or PT0.05S): {text!r}")
    return sum(
        float(value.replace(",", ".")) * _ISO_UNIT_SECONDS[unit]
        for unit, value in match.groupdict().items()
        if value is not None
    )


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration as Knative's autoscaling annotations use them: "60s", "5m", "1m30s", "0"."""
    raw = text.strip() if isinstance(text, str) else ""
    if raw == "0":
        return 0.0
    parts = _GO_DURATION_PART.findall(raw)
    if not parts or "".join(number + unit for number, unit in parts) != raw:
        raise ValueError(f"not a Go duration (like 60s, 5m or 1m30s): {text!r}")
    return sum(float(number) * _GO_UNIT_SECONDS[unit] for number, unit in parts)
