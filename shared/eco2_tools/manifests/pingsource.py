"""PingSource (sources.knative.dev/v1): a cron schedule that posts a fixed CloudEvent to a Service.

Read from `Manifests.documents` (the loader keeps kinds it does not model there), so this module stands alone:
`ping_sources(manifests)`. The schedule is a standard 5-field cron expression (minute hour day-of-month month
day-of-week; `*`, `a-b`, `*/n`, `a-b/n` and lists), checked here so a typo fails the manifest load, not the
first tick; `Cron.next_after` gives the runner its next fire time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from eco2_tools.manifests.fields import ManifestModel, reject, validate
from eco2_tools.manifests.loader import Manifests
from eco2_tools.manifests.models import Destination

__all__ = ["PING_EVENT_TYPE", "SOURCES_API", "Cron", "PingSourceSpec", "ping_sources"]

SOURCES_API = "sources.knative.dev/v1"
# What Knative's PingSource sends (its CRD's registry annotation).
PING_EVENT_TYPE = "dev.knative.sources.ping"
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
_SPAN = tuple(high - low + 1 for _, low, high in _FIELDS)
# The longest a valid schedule can go without firing (29 February every 4 years, plus slack), in minutes.
_HORIZON_MINUTES = 5 * 366 * 24 * 60


def _values(part: str, low: int, high: int) -> frozenset[int]:
    found: set[int] = set()
    for item in part.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            start, end = low, high
        elif "-" in span:
            start_text, end_text = span.split("-", 1)
            start, end = int(start_text), int(end_text)
        else:
            start = end = int(span)
            end = high if step_text else end
        if step < 1 or not low <= start <= end <= high:
            raise ValueError(f"{item!r} is outside {low}-{high}")
        found.update(range(start, end + 1, step))
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed 5-field cron schedule in one time zone."""

    expression: str
    fields: tuple[frozenset[int], ...]
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        parts = expression.split()
        if len(parts) != len(_FIELDS):
            raise ValueError(f"a schedule has 5 fields (minute hour day month weekday), got {len(parts)}")
        try:
            fields = tuple(_values(part, low, high) for part, (_, low, high) in zip(parts, _FIELDS, strict=True))
        except ValueError as exc:
            raise ValueError(f"schedule {expression!r}: {exc}") from None
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        return cls(expression, fields, zone)

    def matches(self, moment: datetime) -> bool:
        minute, hour, day, month, weekday = self.fields
        on_day, on_weekday = moment.day in day, (moment.isoweekday() % 7) in weekday
        # As cron: when both day fields are restricted, either one matching is enough.
        both = len(day) < _SPAN[2] and len(weekday) < _SPAN[4]
        days = (on_day or on_weekday) if both else (on_day and on_weekday)
        return moment.minute in minute and moment.hour in hour and moment.month in month and days

    def next_after(self, after: datetime) -> datetime:
        """The first whole minute strictly after `after` that the schedule fires at."""
        moment = after.astimezone(self.zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(_HORIZON_MINUTES):
            if self.matches(moment):
                return moment
            moment += timedelta(minutes=1)
        raise ValueError(f"schedule {self.expression!r} never fires")


class PingSourceBody(ManifestModel):
    schedule: str = "* * * * *"
    timezone: str = "UTC"
    content_type: str = Field("", alias="contentType")
    data: str = ""
    sink: Destination

    @field_validator("schedule")
    @classmethod
    def _a_schedule(cls, schedule: str) -> str:
        try:
            Cron.parse(schedule)
        except ValueError as exc:
            raise reject(str(exc)) from None
        return schedule

    @field_validator("timezone")
    @classmethod
    def _a_zone(cls, timezone: str) -> str:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise reject(f"unknown time zone {timezone!r}") from None
        return timezone


class PingSourceObject(ManifestModel):
    spec: PingSourceBody


@dataclass(frozen=True, slots=True)
class PingSourceSpec:
    name: str
    namespace: str
    cron: Cron
    content_type: str
    data: str
    sink_service: str

    def event_attributes(self, event_id: str) -> dict[str, Any]:
        """The CloudEvent attributes Knative's PingSource sends."""
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "type": PING_EVENT_TYPE,
            "source": f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}",
            "id": event_id,
        }
        if self.content_type:
            attributes["datacontenttype"] = self.content_type
        return attributes

    def event_data(self) -> object:
        if self.content_type == "application/json" and self.data:
            return json.loads(self.data)
        return self.data or None


def ping_sources(manifests: Manifests) -> dict[str, PingSourceSpec]:
    """Every PingSource of the manifests, by name; each must point at one of the pack's Services."""
    found: dict[str, PingSourceSpec] = {}
    for doc in manifests.documents:
        if (doc.api_version, doc.kind) != (SOURCES_API, "PingSource"):
            continue
        body = validate(doc, PingSourceObject).spec
        if body.sink.ref.name not in manifests.services:
            doc.fail(f"spec.sink names Service {body.sink.ref.name!r}, which is not in knative/")
        found[doc.name] = PingSourceSpec(
            name=doc.name,
            namespace=str(doc.metadata.get("namespace") or "default"),
            cron=Cron.parse(body.schedule, body.timezone),
            content_type=body.content_type,
            data=body.data,
            sink_service=body.sink.ref.name,
        )
    return found
