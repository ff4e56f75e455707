"""Helpers for the streaming function (functions/stream/): what the Lambda Web Adapter does, in tests.

- ``stream_app()`` is the ASGI app uvicorn imports in Lambda (``app:app`` next to run.sh).
- ``adapter_request(event)`` turns a Function URL event (events/stream_*.json) into the HTTP request
  the adapter sends the app: method, raw path, raw query string, headers and body, plus the
  ``x-amzn-request-context`` header (the event's requestContext as JSON, which carries the IAM
  caller) and ``x-amzn-lambda-context``.
- ``uvicorn_server(app)`` serves an app on a free loopback port from a background thread, as
  run.sh does in Lambda; inside ``mock_aws`` (process-wide) its requests reach moto too.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from tests.functional.aws.support import ACCOUNT, OWNER, REGION, load_event, load_module

STREAM_APP = "stream/app.py"


def stream_module() -> Any:
    return load_module(STREAM_APP)


def stream_app() -> Any:
    return stream_module().app


# --- what the Web Adapter sends the app ------------------------------------------------------------


def request_context(owner: str = OWNER) -> dict[str, Any]:
    """A Function URL request context (IAM auth) for ``owner``, taken from events/stream_execute.json."""
    context: dict[str, Any] = load_event("stream_execute.json")["requestContext"]
    context["authorizer"]["iam"]["userArn"] = owner
    return context


def identity_headers(owner: str = OWNER) -> dict[str, str]:
    """The header the Web Adapter adds to every request: the caller's request context as JSON."""
    return {"x-amzn-request-context": json.dumps(request_context(owner))}


@dataclass
class AdapterRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")


def adapter_request(event: dict[str, Any]) -> AdapterRequest:
    """The HTTP request the Lambda Web Adapter forwards to uvicorn for a Function URL event."""
    context = event["requestContext"]
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    headers = {name.lower(): value for name, value in event.get("headers", {}).items()}
    headers.pop("content-length", None)  # recomputed for the body actually sent
    # Set (not appended) by the adapter: a client cannot smuggle in another caller.
    headers["x-amzn-request-context"] = json.dumps(context)
    headers["x-amzn-lambda-context"] = json.dumps(
        {
            "request_id": context.get("requestId", ""),
            "deadline": int(time.time() * 1000) + 300_000,
            "invoked_function_arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:StreamFunction",
            "env_config": {"function_name": "StreamFunction", "memory": 512, "version": "$LATEST"},
        }
    )
    return AdapterRequest(context["http"]["method"], event["rawPath"], event.get("rawQueryString", ""), headers, raw)


def with_owner(event: dict[str, Any], owner: str) -> dict[str, Any]:
    event = json.loads(json.dumps(event))
    event["requestContext"]["authorizer"]["iam"]["userArn"] = owner
    return event


# --- NDJSON ----------------------------------------------------------------------------------------


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def is_event(line: dict[str, Any]) -> bool:
    """Events carry a cursor; control lines (keepalive, stream_timeout) do not."""
    return "cursor" in line


# --- uvicorn on loopback, as run.sh starts it -------------------------------------------------------


@contextmanager
def uvicorn_server(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` (lifespan on, as run.sh) on a free 127.0.0.1 port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-stream", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start in {startup_timeout} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Line:
    """One NDJSON line as the client received it."""

    data: dict[str, Any]


def read_lines(response: httpx.Response) -> Iterator[Line]:
    for text in response.iter_lines():
        if text.strip():
            yield Line(json.loads(text))


def stream_lines(
    client: httpx.Client, method: str, url: str, owner: str = OWNER, **kwargs: Any
) -> tuple[httpx.Response, list[Line]]:
    """A whole stream, line by line (status and headers in the response)."""
    headers = {**identity_headers(owner), **kwargs.pop("headers", {})}
    with client.stream(method, url, headers=headers, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        return response, list(read_lines(response))
