"""What both task stores encode the same way: size bounds, sort keys, page cursors, event data and lines.

The DynamoDB store takes the bound, the sort key and the cursors from here, so that the local system
rejects what AWS would and pages the same way; the embedded store also encodes each event's data
and its NDJSON line here, once, at the event's commit.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from pydantic_core import to_json

from agentic.errors import InputTooLarge, InvalidInput
from agentic.models import NewEvent

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


def encode_data(data: dict[str, Any]) -> str:
    """An event's data as stored: compact JSON, non-ASCII text as UTF-8, not \\u escapes (a 3-byte
    character stays 3 bytes, an escape is 6); what JSON cannot hold as its ``str``. Pydantic's encoder,
    so that it is also the ``data`` of the event's stream line, byte for byte (``event_line``)."""
    return to_json(data, serialize_unknown=True).decode()


def event_line(event: NewEvent, cursor: int, data: str) -> str:
    """The event's NDJSON line, exactly ``StreamEvent.model_dump_json() + "\\n"``, around its encoded data."""
    return (
        f'{{"event_type":"{event.event_type.value}","task_id":{to_json(event.task_id).decode()},'
        f'"timestamp":{to_json(event.timestamp).decode()},"cursor":{cursor},"data":{data}}}\n'
    )
