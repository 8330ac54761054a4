"""eco2.binary and the runner's reply conversion give what the CloudEvents SDK gives, without its marshallers."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http

from eco2.adapter import decode
from eco2.binary import encode
from eco2.errors import BadRequest
from eco2_tools.local.messages import NotACloudEvent, reply_message, to_message

BASE = {"type": "eco2.test", "source": "/test", "id": "1", "time": "2026-01-01T00:00:00+00:00"}
EVENTS: list[tuple[dict[str, str], Any]] = [
    ({**BASE, "datacontenttype": "application/json", "priority": "high"}, {"text": "유리병", "steps": [1, 2]}),
    (BASE, {"a": 1}),
    ({**BASE, "datacontenttype": "text/plain"}, b"raw \xff bytes"),
    ({**BASE, "datacontenttype": "text/plain"}, "a string"),
    (BASE, None),
    ({**BASE, "datacontenttype": "application/json"}, [1, "x"]),
]


@pytest.mark.parametrize(("attributes", "data"), EVENTS)
def test_encode_and_decode_match_the_sdk(attributes: dict[str, str], data: Any) -> None:
    event = CloudEvent(attributes, data)
    sdk_headers, sdk_body = to_binary(event)
    headers, body = encode(event)
    assert (headers, body) == (dict(sdk_headers), sdk_body or b"")
    ours, theirs = decode(headers, body), from_http(headers, body)
    assert ours.get_attributes() == theirs.get_attributes()
    assert ours.get_data() == theirs.get_data()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(None, b"{not json"), ("application/json", b""), ("application/json; charset=utf-8", b'{"x": 1}')],
)
def test_binary_requests_decode_as_the_sdk_decodes_them(content_type: str | None, body: bytes) -> None:
    headers = {"CE-SpecVersion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-time": "x"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    ours, theirs = decode(headers, body), from_http(headers, body)
    assert (ours.get_attributes(), ours.get_data()) == (theirs.get_attributes(), theirs.get_data())


def test_a_binary_reply_is_carried_over_as_it_came() -> None:
    event = CloudEvent({**BASE, "datacontenttype": "application/json", "subject": "job-1"}, {"a": "한"})
    headers, body = encode(event)
    message, expected = reply_message(headers, body), to_message(event)
    assert message.body == expected.body
    assert message.content_type == expected.content_type == "application/json"
    assert {k: v for k, v in message.headers.items() if not k.startswith("x-")} == {
        k: v for k, v in expected.headers.items() if not k.startswith("x-")
    }
    assert message.message_id == "1"


def test_a_structured_reply_is_converted_to_binary() -> None:
    event = CloudEvent({**BASE, "datacontenttype": "application/json"}, {"a": 1})
    headers, body = to_structured(event)
    message = reply_message({k.lower(): v for k, v in headers.items()}, body)
    assert message.headers["type"] == "eco2.test"
    assert message.body == b'{"a": 1}'


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},  # no attributes at all
        {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s"},  # no type
        {"ce-specversion": "9.9", "ce-id": "1", "ce-source": "s", "ce-type": "t"},
        {"content-type": "application/cloudevents+json"},  # structured, but the body is not one
    ],
)
def test_a_reply_that_is_not_a_cloudevent_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(NotACloudEvent):
        reply_message(headers, b"{}")


def test_a_binary_request_without_a_required_attribute_is_still_a_400() -> None:
    with pytest.raises(BadRequest, match="missing required attribute: type"):
        decode({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s"}, b"{}")
