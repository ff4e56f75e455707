"""A server with no connection open does not wake for its Date header (QuietServer): its first
response after a quiet spell still carries the current date, and a stop signal still stops it."""

from __future__ import annotations

import signal
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from tests.e2e.server import LocalServer

pytestmark = pytest.mark.e2e

#: Longer than the main loop's tick while connections are open (1 s): a date left from before the
#: quiet spell would be at least this old.
QUIET_SECONDS = 2.5


def test_the_first_response_after_a_quiet_spell_carries_the_current_date(tmp_path):
    with LocalServer(tmp_path / "t.db") as server:
        # Given a server whose connections are all closed for a while
        time.sleep(QUIET_SECONDS)
        # When a client connects and asks something
        sent = time.time()
        with httpx.Client(base_url=server.url) as client:
            response = client.get("/health")
        # Then the Date header is the time of that request, not of the last request before the spell
        date = parsedate_to_datetime(response.headers["date"]).timestamp()
        assert date >= int(sent) - 1, f"Date {response.headers['date']} is {sent - date:.1f} s old"


def test_a_stop_signal_stops_a_server_with_no_connection_open(tmp_path):
    server = LocalServer(tmp_path / "t.db")
    with server:
        assert server.proc is not None
        # Given a server whose main loop waits with no connection open
        time.sleep(QUIET_SECONDS)
        # When it is told to stop
        server.proc.send_signal(signal.SIGTERM)
        # Then it stops (its main loop was woken: it has no tick to notice the signal by); uvicorn
        # raises the signal again once it has shut down, so the exit status is the signal's
        assert server.proc.wait(timeout=10) in (0, -signal.SIGTERM)
