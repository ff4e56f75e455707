"""What both task stores share: the bound on a stored payload, sortable timestamps, page cursors.

Apart from the SQLite store so that the DynamoDB store (the Lambda functions') does not import
SQLite and the local event bus with it.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from agentic.errors import InputTooLarge, InvalidInput

__all__ = ["MAX_PAYLOAD_BYTES", "check_payload_size", "decode_cursor", "encode_cursor", "sort_key"]

#: Bound on a stored task document or event data, in UTF-8 bytes. DynamoDB items hold at most 400 KB;
#: both stores enforce this bound so the local system rejects what AWS would.
MAX_PAYLOAD_BYTES = 350 * 1024


def check_payload_size(what: str, text: str) -> None:
    """Raise ``InputTooLarge`` when ``text`` is over ``MAX_PAYLOAD_BYTES`` (encoded only if it may be)."""
    if len(text) * 4 > MAX_PAYLOAD_BYTES and (size := len(text.encode())) > MAX_PAYLOAD_BYTES:
        raise InputTooLarge(
            f"{what} is {size} bytes; a stored item holds at most {MAX_PAYLOAD_BYTES} bytes "
            "(DynamoDB limits an item to 400 KB)"
        )


def sort_key(ts: datetime) -> str:
    """A fixed-width UTC timestamp that sorts as text."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_cursor(parts: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid: pass back the next_cursor of a previous page") from None
    if not isinstance(parts, list):
        raise InvalidInput("cursor is not valid: pass back the next_cursor of a previous page")
    return parts
