"""Durations as the manifests write them: ISO-8601 for Eventing's delivery, Go's for Serving's annotations."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import TypeAdapter, ValidationError

__all__ = ["parse_go_duration", "parse_iso8601_duration"]

_TIMEDELTA = TypeAdapter(timedelta)
# pydantic reads ISO-8601 durations, but also numbers and "HH:MM:SS", and takes a year as 365 days and a month
# as 30; Knative's delivery fields hold only "P..." durations, and years and months have no fixed length.
_ISO_REFUSED = re.compile(r"P[^T]*[YM]|.*T")
# Go durations as Knative reads its autoscaling annotations ("60s", "5m", "1m30s", "500ms"): pydantic has none.
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_iso8601_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as PT10S, PT0.05S, PT1M, PT1.5S, P1DT2H or P1W.

    Years and months are refused (no fixed length); so are negative and empty durations ("P", "PT").
    """
    raw = text.strip() if isinstance(text, str) else ""
    if raw.startswith("P") and not _ISO_REFUSED.fullmatch(raw):
        try:
            return _TIMEDELTA.validate_python(raw).total_seconds()
        except ValidationError:
            pass
    raise ValueError(f"not an ISO-8601 duration (like PT10S or PT0.05S): {text!r}")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration as Knative's autoscaling annotations use them: "60s", "5m", "1m30s", "0"."""
    raw = text.strip() if isinstance(text, str) else ""
    if raw == "0":
        return 0.0
    parts = _GO_DURATION_PART.findall(raw)
    if not parts or "".join(number + unit for number, unit in parts) != raw:
        raise ValueError(f"not a Go duration (like 60s, 5m or 1m30s): {text!r}")
    return sum(float(number) * _GO_UNIT_SECONDS[unit] for number, unit in parts)
