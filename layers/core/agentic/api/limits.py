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


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    @property
    def message(self) -> str:
        return f"request body exceeds {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                body = json.dumps({"error": "input_too_large", "message": self.message}).encode()
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
    """A body must be JSON (``application/json`` or ``application/*+json``): else 415.

    Without a Content-Type a body is refused too (FastAPI would not parse it as JSON and the client
    would get a puzzling 422); a request without a body goes on to the usual 422 "field required".
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    main, _, sub = media_type.partition("/")
    if main == "application" and (sub == "json" or sub.endswith("+json")):
        return
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not media_type and not has_body:
        return
    raise HTTPException(
        status_code=415,
        detail=f"the body must be application/json (Content-Type: application/json), not {media_type or 'unlabelled'}",
    )
