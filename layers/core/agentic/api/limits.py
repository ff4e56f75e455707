"""Request bodies: over a size limit, 413 before they are read into memory; not JSON, 415.

FastAPI's ``max_body_size`` (Starlette's RequestBodyLimitMiddleware) answers an oversized
Content-Length with a plain-text body, and every error of this API is JSON
(``{"error", "message"}``), so this small middleware does the same job in the API's format. It
checks Content-Length up front and counts bytes as they arrive (chunked uploads have none).
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentic.api.answers import error_body, json_body_refusal, too_large_message


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    @property
    def message(self) -> str:
        return too_large_message(self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                # rendered as JSONResponse renders every other error (compact)
                body = json.dumps(error_body("input_too_large", self.message), separators=(",", ":")).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI lets HTTPException out of body parsing; the error handlers answer 413.
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited_receive, send)


async def require_json(request: Request) -> None:
    """A body must be JSON, else 415 (``answers.json_body_refusal`` says when)."""
    refusal = json_body_refusal(request.headers)
    if refusal is not None:
        raise HTTPException(status_code=415, detail=refusal)
