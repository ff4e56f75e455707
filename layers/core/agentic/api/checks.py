"""Request parameters and bodies checked as FastAPI checks them, without FastAPI.

Two fronts read requests by hand and must answer exactly as FastAPI's solver would: the Lambda API
functions' lean front (``agentic.aws.lean_http``, no web framework: cold start) and the FastAPI routes
of the task's hot path (``agentic.api.hand_parsed``: FastAPI's generic solver cost ~90 µs a request
there). Both collect every parameter's errors, each ``loc`` prefixed by where it was (path, query,
header, body), before one 422, and read a body as FastAPI reads it. Nothing here imports a web
framework.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from agentic.api.answers import (
    CURSOR_MAX_LENGTH,
    LIST_LIMIT_MAX,
    TASK_ID_MAX_LENGTH,
    Answer,
    validation_answer,
)
from agentic.models import MAX_CURSOR, TaskStatus

M = TypeVar("M", bound=BaseModel)

#: A body that was not sent (FastAPI's ``Undefined``): required bodies are missing, optional ones None.
NO_BODY: Any = object()


@cache
def _adapter(kind: str) -> TypeAdapter[Any]:
    """Parameter validators, built on the first request that needs one (not at import)."""
    annotations: dict[str, Any] = {
        "task_id": Annotated[str, Field(min_length=1, max_length=TASK_ID_MAX_LENGTH)],
        "limit": Annotated[int, Field(ge=1, le=LIST_LIMIT_MAX)],
        "cursor": Annotated[str | None, Field(max_length=CURSOR_MAX_LENGTH)],
        "status": TaskStatus | None,
        "after": Annotated[int | None, Field(ge=0, le=MAX_CURSOR)],
    }
    return TypeAdapter(annotations[kind])


class Checks:
    """Collects every parameter's errors (each ``loc`` prefixed by where it was: path, query, header,
    body) before one 422, as FastAPI does."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def _failed(self, prefix: tuple[str, ...], exc: ValidationError) -> None:
        self.errors.extend({**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False))

    def param(self, where: str, name: str, raw: str | None, default: Any = None) -> Any:
        if raw is None:
            return default
        try:
            return _adapter(name).validate_python(raw, from_attributes=True)
        except ValidationError as exc:
            self._failed((where, name), exc)
            return None

    def body(self, model: type[M], raw: Any, *, required: bool) -> M | None:
        if raw is NO_BODY:
            if required:
                self.errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
            return None
        if raw is None and not required:  # JSON null for an optional body
            return None
        try:
            return model.model_validate(raw, from_attributes=True)
        except ValidationError as exc:
            self._failed(("body",), exc)
            return None

    def refused(self) -> Answer | None:
        return validation_answer(self.errors) if self.errors else None


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """The body as FastAPI reads it: JSON when labelled JSON, else the bytes; raises what json.loads does."""
    if not raw:
        return NO_BODY
    if not content_type:
        return raw
    from email.message import Message  # loaded already by then (botocore's http.client, or uvicorn's)

    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json")):
        return json.loads(raw)
    return raw


def json_error(exc: json.JSONDecodeError) -> dict[str, Any]:
    """FastAPI's validation error for a body that is not valid JSON."""
    return {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "ctx": {"error": exc.msg}}
