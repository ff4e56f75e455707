"""The NDJSON stream's response: each chunk sent as it comes, and the stream stopped when the client leaves.

Starlette's ``StreamingResponse`` does both through an anyio task group (two tasks, cancel scopes)
on servers that speak ASGI spec 2.3, as uvicorn does: about a tenth of the server's CPU per task
here. This response runs the stream in the request's own task and watches for the disconnect in one
plain asyncio task, which cancels the stream when the client is gone, as the task group did; a
stream that ends first cancels the watcher. A stream's last chunk (``LastChunk``) ends the body in
the same message, so the end costs no write of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agentic.service.stream import LastChunk


class NdjsonResponse(StreamingResponse):
    """A ``StreamingResponse`` of str or bytes chunks; FastAPI passes it through like any response."""

    def __init__(
        self,
        lines: AsyncIterator[str] | AsyncIterator[bytes],
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(lines, media_type=media_type, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - routes of this response are HTTP only
            await super().__call__(scope, receive, send)
            return
        stream = asyncio.current_task()
        assert stream is not None
        watcher = asyncio.ensure_future(_disconnected(receive))
        left: list[bool] = []
        over: list[bool] = []

        def client_left(done: asyncio.Future[None]) -> None:
            # Not once the response is over: the request's task goes on (middleware) and must not be hit.
            if not over and not done.cancelled() and done.exception() is None:
                left.append(True)
                stream.cancel()

        watcher.add_done_callback(client_left)
        lines = self.body_iterator
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            more = True
            async for chunk in lines:
                body = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                more = not isinstance(chunk, LastChunk)  # the end of the task: the body ends with it
                await send({"type": "http.response.body", "body": body, "more_body": more})
                if not more:
                    break
            if more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left or stream.cancelling() > 1:  # not (only) ours: the server's, it goes on up
                raise
            stream.uncancel()  # our own cancel: the client left, and that ends the response quietly
        finally:
            over.append(True)
            watcher.cancel()
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                await aclose()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
