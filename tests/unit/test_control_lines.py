"""Stream control lines (keepalive, stream_timeout) are encoded like events."""

import json
import re

import pytest

from agentic.models import EventType, StreamEvent, utcnow
from agentic.service.stream import control_line

pytestmark = pytest.mark.unit

STAMP = r'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"'


def test_control_lines_are_compact_json_with_the_events_timestamp_format():
    # Given an event and a control line
    event = StreamEvent(event_type=EventType.TASK_STARTED, task_id="t", timestamp=utcnow(), cursor=1).to_line()
    line = control_line("keepalive", "t", cursor=1)
    # Then both are compact JSON with the timestamp in UTC ending in "Z"
    assert re.search(STAMP, event)
    assert re.search(STAMP, line)
    assert ", " not in line
    assert json.loads(line)["data"] == {"cursor": 1}
