"""The NDJSON stream's response: chunks as they come, the stream stopped when its client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentic.api.ndjson import NdjsonResponse
from agentic.service.stream import LastChunk

pytestmark = pytest.mark.unit

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "method": "POST", "path": "/"}


class Client:
    """An ASGI server's side of one request: what was sent, and a disconnect to trigger."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.gone = asyncio.Event()
        self._body_read = False

    async def receive(self) -> dict:
        if not self._body_read:
            self._body_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)


async def test_chunks_go_out_as_they_come_and_the_body_ends():
    # Given a stream of two lines, the second a little later
    async def lines() -> AsyncIterator[str]:
        yield '{"a":1}\n'
        await asyncio.sleep(0.01)
        yield '{"b":"ü"}\n'

    client = Client()
    # When it is sent
    await NdjsonResponse(lines(), media_type="application/x-ndjson", headers={"X-Accel-Buffering": "no"})(
        SCOPE, client.receive, client.send
    )
    # Then the headers, each line as UTF-8 in a chunk of its own, and the end of the body
    start, *bodies = client.sent
    assert start["status"] == 200
    assert (b"content-type", b"application/x-ndjson") in start["headers"]
    assert (b"x-accel-buffering", b"no") in start["headers"]
    assert [(m["body"], m["more_body"]) for m in bodies] == [
        (b'{"a":1}\n', True),
        ('{"b":"ü"}\n'.encode(), True),
        (b"", False),
    ]


async def test_a_client_that_leaves_stops_the_stream():
    # Given a stream that would go on for a minute
    closed = asyncio.Event()

    async def lines() -> AsyncIterator[str]:
        try:
            yield "first\n"
            await asyncio.sleep(60)
            yield "never\n"
        finally:
            closed.set()

    client = Client()
    response = asyncio.create_task(
        NdjsonResponse(lines(), media_type="application/x-ndjson")(SCOPE, client.receive, client.send)
    )
    await asyncio.sleep(0.01)
    # When its client disconnects
    client.gone.set()
    # Then the stream is closed at once, not drained, and the response ends quietly
    await asyncio.wait_for(closed.wait(), 5)
    await asyncio.wait_for(response, 5)
    assert [m.get("body") for m in client.sent[1:]] == [b"first\n"]


async def test_a_cancel_from_elsewhere_is_not_swallowed():
    # Given a stream in progress whose client stays
    async def lines() -> AsyncIterator[str]:
        yield "first\n"
        await asyncio.sleep(60)

    client = Client()
    response = asyncio.create_task(
        NdjsonResponse(lines(), media_type="application/x-ndjson")(SCOPE, client.receive, client.send)
    )
    await asyncio.sleep(0.01)
    # When the server cancels the request (it stops)
    response.cancel()
    # Then the cancellation goes on up
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(response, 5)


async def test_the_last_chunk_ends_the_body_in_the_same_message():
    # Given a stream whose second chunk is its last (its task's end), and a generator that would go on
    async def lines() -> AsyncIterator[str]:
        yield "first\n"
        yield LastChunk("end\n")
        yield "never\n"

    client = Client()
    # When it is sent
    await NdjsonResponse(lines(), media_type="application/x-ndjson")(SCOPE, client.receive, client.send)
    # Then the last chunk closes the body: no empty message after it, nothing more read
    assert [(m["body"], m["more_body"]) for m in client.sent[1:]] == [(b"first\n", True), (b"end\n", False)]
