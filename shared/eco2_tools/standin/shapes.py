"""The OpenAI wire shapes the stand-in speaks: chat requests in; completions, chunks and errors out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from eco2.model import ANSWER_SCHEMA_NAME, CLASSIFICATION_SCHEMA_NAME

STANDIN_HEADER = "X-Eco2-Standin"
FINGERPRINT = "eco2-standin"
MODEL_PREFIX = "eco2-standin/"
_KIND_BY_SCHEMA = {CLASSIFICATION_SCHEMA_NAME: "vision", ANSWER_SCHEMA_NAME: "answer"}


class ApiError(Exception):
    """An OpenAI-style error response; `message` is always ours, never an exception's text."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": None, "code": self.code}}


class _Open(BaseModel):
    # Clients send many fields the stand-in ignores (temperature, tools, …); they must not be rejected.
    model_config = ConfigDict(extra="allow")


class ImageURL(_Open):
    url: str = Field(min_length=1)


class ContentPart(_Open):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(_Open):
    role: str = Field(min_length=1)
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(part.text for part in self.content if part.type == "text" and part.text)


class JsonSchemaFormat(_Open):
    name: str | None = None


class ResponseFormat(_Open):
    type: str
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def user_messages(self) -> list[ChatMessage]:
        return [message for message in self.messages if message.role == "user"]

    def user_text(self) -> str:
        """The user's own words only: the system prompt names every category and would match anything."""
        return "\n".join(text for message in self.user_messages() if (text := message.text()))

    def image_url(self) -> str | None:
        for message in reversed(self.user_messages()):
            if isinstance(message.content, list):
                for part in message.content:
                    if part.type == "image_url" and part.image_url is not None:
                        return part.image_url.url
        return None


def kind_of(raw: object) -> str:
    """vision, answer or other, read leniently so even a request that fails validation is counted right."""
    try:
        name = raw["response_format"]["json_schema"]["name"]  # type: ignore[index]
    except (TypeError, KeyError):
        return "other"
    return _KIND_BY_SCHEMA.get(name, "other") if isinstance(name, str) else "other"


def token_estimate(characters: int) -> int:
    # A rough count (about four characters a token) so usage looks plausible and stays deterministic.
    return max(1, characters // 4)


class Reply:
    """One answer to one request, in the shapes of a completion and of a stream of chunks."""

    def __init__(self, *, model: str, content: str, prompt_chars: int) -> None:
        self.id = f"chatcmpl-standin-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = MODEL_PREFIX + model
        self.content = content
        self.usage = {
            "prompt_tokens": token_estimate(prompt_chars),
            "completion_tokens": token_estimate(len(content)),
            "total_tokens": token_estimate(prompt_chars) + token_estimate(len(content)),
        }

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }

    def completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": self.content, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage}

    def pieces(self, count: int = 8) -> list[str]:
        """The content cut into up to `count` consecutive pieces that join back to it exactly."""
        size = max(1, -(-len(self.content) // count))
        return [self.content[i : i + size] for i in range(0, len(self.content), size)] or [""]

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage}
