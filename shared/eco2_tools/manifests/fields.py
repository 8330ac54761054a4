"""The pydantic building blocks of the manifest models, and their errors turned into ManifestErrors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from eco2_tools.manifests.documents import Document
from eco2_tools.manifests.durations import parse_go_duration, parse_iso8601_duration

__all__ = [
    "Count",
    "GoSeconds",
    "IsoSeconds",
    "ManifestModel",
    "Name",
    "PositiveIsoSeconds",
    "QuotedCount",
    "StrictCount",
    "StringMap",
    "YamlString",
    "expect",
    "reject",
    "validate",
    "within",
]

Model = TypeVar("Model", bound=BaseModel)
# How much of an offending value a message quotes.
_MAX_QUOTED = 80


class ManifestModel(BaseModel):
    """A part of a Kubernetes object: camelCase aliases, unknown fields left to the CRD schema, null = unset."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        # As Kubernetes reads `field: null` (or `field:` with nothing after it): the field is not set.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


def reject(problem: str) -> PydanticCustomError:
    """The error a validator raises: `problem` is the whole message, after the field's path."""
    return PydanticCustomError("manifest", "{problem}", {"problem": problem})


def _quoted(value: object) -> str:
    if not isinstance(value, str):
        raise reject(f"must be a string value (quote it in YAML), got {_show(value)}")
    return value


def _whole_number(value: object) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return _strict_number(value)


def _strict_number(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise reject(f"must be an integer, got {_show(value)}")


def _quoted_number(value: object) -> int:
    return _whole_number(_quoted(value))


def _non_empty(value: str) -> str:
    if not value:
        raise reject("must be a non-empty string")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise reject(f"must be positive, got {value:g}")
    return value


def _duration(parse: Callable[[str], float], kind: str) -> BeforeValidator:
    def seconds(value: object) -> float:
        if not isinstance(value, str):
            raise reject(f"must be {kind} duration string, got {_show(value)}")
        try:
            return parse(value)
        except ValueError as exc:
            raise reject(str(exc)) from None

    return BeforeValidator(seconds)


def within(minimum: float, maximum: float | None = None, unit: str = "") -> AfterValidator:
    """A bound on a number, said as Knative's docs say it ("between 6s and 3600s", "at least 1")."""

    def check(value: float) -> float:
        if value < minimum or (maximum is not None and value > maximum):
            bounds = (
                f"at least {minimum:g}{unit}" if maximum is None else f"between {minimum:g}{unit} and {maximum:g}{unit}"
            )
            raise reject(f"must be {bounds}, got {value:g}{unit}")
        return value

    return AfterValidator(check)


def expect(wanted: str) -> AfterValidator:
    """A field that must hold exactly `wanted` (an apiVersion, a kind, a broker class)."""

    def check(value: str) -> str:
        if value != wanted:
            raise reject(f"must be {wanted}, got {value!r}")
        return value

    return AfterValidator(check)


YamlString = Annotated[str, BeforeValidator(_quoted)]
Name = Annotated[YamlString, AfterValidator(_non_empty)]
StringMap = dict[str, YamlString]
# An integer field; a quoted one is taken too, as before pydantic (the CRD schema test is the strict check).
Count = Annotated[int, BeforeValidator(_whole_number), within(0)]
StrictCount = Annotated[int, BeforeValidator(_strict_number), within(0)]
# An integer in an annotation: annotations are strings, so it must be quoted.
QuotedCount = Annotated[int, BeforeValidator(_quoted_number), within(0)]
GoSeconds = Annotated[float, _duration(parse_go_duration, "a Go")]
IsoSeconds = Annotated[float, _duration(parse_iso8601_duration, "an ISO-8601")]
PositiveIsoSeconds = Annotated[IsoSeconds, AfterValidator(_positive)]


def validate(doc: Document, model: type[Model]) -> Model:
    """`doc`'s body as `model`; any problem is a ManifestError naming the file, the object and the field.

    Validators see the object's own namespace as `info.context["namespace"]` (None when it names none).
    """
    try:
        return model.model_validate(doc.body, context={"namespace": doc.metadata.get("namespace")})
    except ValidationError as exc:
        problems = dict.fromkeys(_describe(error) for error in exc.errors(include_url=False))
        doc.fail("; ".join(problems))


def _describe(error: ErrorDetails) -> str:
    where = _path(error["loc"])
    kind = error["type"]
    if kind == "manifest":
        problem = error["msg"]
    elif kind == "missing":
        problem = "is missing"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        problem = f"must be a mapping, got {_show(error['input'])}"
    elif kind == "list_type":
        problem = f"must be a list, got {_show(error['input'])}"
    else:
        message = error["msg"].removeprefix("Value error, ")
        problem = f"{message[:1].lower()}{message[1:]}, got {_show(error['input'])}"
    return f"{where}: {problem}" if where else problem


def _path(loc: tuple[int | str, ...]) -> str:
    """`spec.template.spec.containers[0].env[1].value`; map keys with dots or slashes in brackets."""
    text = ""
    for part in loc:
        if isinstance(part, int) or "." in part or "/" in part:
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."
