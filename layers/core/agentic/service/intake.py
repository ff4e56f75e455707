"""Turning a dropped document or a queued message into a task description, with the API's bounds.

Shared by the S3 trigger, the SQS trigger and the local inbox, so every way in accepts exactly what
``POST /tasks`` accepts.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentic.models import TaskCreate

MAX_DOCUMENT_BYTES = 64 * 1024


class UnusableInput(ValueError):
    """The input can never become a task (retrying cannot help); the message says why."""


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())


def valid_description(text: str) -> str:
    try:
        return TaskCreate(description=text).description
    except ValidationError as exc:
        raise UnusableInput(_describe(exc)) from None


def description_from_document(name: str, raw: bytes, max_bytes: int = MAX_DOCUMENT_BYTES) -> str:
    """A ``.txt`` document's text, or a ``.json`` document's ``description``."""
    if len(raw) > max_bytes:
        raise UnusableInput(f"document is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnusableInput("document is not UTF-8 text") from None
    if name.endswith(".json"):
        try:
            doc: Any = json.loads(text)
        except ValueError as exc:
            raise UnusableInput(f"not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("description"), str):
            raise UnusableInput('JSON must be an object with a "description" string')
        text = doc["description"]
    elif not name.endswith(".txt"):
        raise UnusableInput("only .txt and .json documents become tasks")
    return valid_description(text)


class TaskMessage(BaseModel):
    """An SQS message body: ``{"description": "...", "idempotency_key": "..."}``."""

    model_config = ConfigDict(extra="ignore")

    description: str  # bounded by valid_description, the API's own rules
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("description")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return valid_description(value)


def parse_task_message(body: str) -> TaskMessage:
    try:
        return TaskMessage.model_validate_json(body)
    except ValidationError as exc:
        raise UnusableInput(_describe(exc)) from None
