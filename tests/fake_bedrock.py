"""A local bedrock-runtime that answers ``ConverseStream`` as AWS does, for boto3 to talk to.

A real HTTP server (stdlib, in a thread) on loopback: boto3 reaches it through
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` (or ``endpoint_url``) and parses its answers with botocore's
real service model and event-stream decoder. The answer is the binary AWS event stream
(``application/vnd.amazon.eventstream``, sent chunked): each message is a prelude (total length,
headers length, CRC32), headers (``:message-type``, ``:event-type`` / ``:exception-type``,
``:content-type``), a JSON payload and the message's CRC32. Call-level errors are an HTTP status with
``x-amzn-ErrorType`` and a JSON body, as the service sends them.

Each request takes the next scripted ``Reply`` (the last one repeats); the server records every
request and when a client went away before its answer was sent.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: HTTP status of each call-level error (bedrock-runtime's service model).
ERROR_STATUS = {
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "ModelTimeoutException": 408,
    "InternalServerException": 500,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ValidationException": 400,
    "ModelErrorException": 424,
    "ServiceQuotaExceededException": 400,
}


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude + prelude CRC, headers, payload, message CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + head + payload
    return body + struct.pack("!I", zlib.crc32(body) & 0xFFFFFFFF)


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"}
    return encode_message(headers, json.dumps(payload).encode())


def exception(exception_type: str, message: str) -> bytes:
    headers = {":message-type": "exception", ":exception-type": exception_type, ":content-type": "application/json"}
    return encode_message(headers, json.dumps({"message": message}).encode())


@dataclass
class Reply:
    """One scripted answer.

    ``text``: streamed in ``chunk``-character deltas, ``delay`` seconds apart; ``tool_input``: the
    JSON of a toolUse answer (the structured call); ``error``: a call-level error code (an HTTP
    status with ``x-amzn-ErrorType``); ``stream_error``: an exception frame after the text;
    ``cut``: the connection is dropped after the text (the chunked body never ends);
    ``ends_early``: the body ends properly after the text but the answer does not (no messageStop).
    """

    text: str = ""
    tool_input: dict[str, Any] | None = None
    chunk: int = 20
    delay: float = 0.0
    #: A pause after the first delta (a model thinking): only a client that closes is noticed then.
    stall: float = 0.0
    usage: tuple[int, int] = (11, 7)
    stop_reason: str | None = None
    error: str | None = None
    message: str = "scripted"
    stream_error: str | None = None
    cut: bool = False
    ends_early: bool = False

    def frames(self) -> Iterator[tuple[float, bytes]]:
        """(seconds to wait before it, frame)."""
        for frame in self._frames():
            yield frame if isinstance(frame, tuple) else (0.0, frame)

    def _frames(self) -> Iterator[bytes | tuple[float, bytes]]:
        yield event("messageStart", {"role": "assistant"})
        if self.tool_input is not None:
            yield event(
                "contentBlockStart",
                {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "task_analysis"}}},
            )
            encoded = json.dumps(self.tool_input)
            for start in range(0, len(encoded), self.chunk):
                piece = encoded[start : start + self.chunk]
                yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}})
            yield event("contentBlockStop", {"contentBlockIndex": 0})
        for start in range(0, len(self.text), self.chunk):
            pause = self.stall if start == self.chunk else self.delay
            delta = {"contentBlockIndex": 0, "delta": {"text": self.text[start : start + self.chunk]}}
            yield pause, event("contentBlockDelta", delta)
        if self.cut or self.ends_early:
            return
        if self.stream_error is not None:
            yield exception(self.stream_error, self.message)
            return
        if self.text:
            yield event("contentBlockStop", {"contentBlockIndex": 0})
        stop = self.stop_reason or ("tool_use" if self.tool_input is not None else "end_turn")
        yield event("messageStop", {"stopReason": stop})
        inputs, outputs = self.usage
        yield event(
            "metadata",
            {
                "usage": {"inputTokens": inputs, "outputTokens": outputs, "totalTokens": inputs + outputs},
                "metrics": {"latencyMs": 5},
            },
        )


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeBedrock:
    """The server and its script. ``url`` is what AWS_ENDPOINT_URL_BEDROCK_RUNTIME takes."""

    replies: list[Reply] = field(default_factory=lambda: [Reply(text="Hello from the fake Bedrock.")])
    requests: list[Request] = field(default_factory=list)
    #: time.monotonic() of each request whose client closed the connection before the answer ended.
    disconnects: list[float] = field(default_factory=list)
    _served: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)
            self._served = 0

    def _next(self) -> Reply:
        with self._lock:
            reply = self.replies[min(self._served, len(self.replies) - 1)]
            self._served += 1
            return reply

    def start(self) -> FakeBedrock:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append(Request(self.path, body, dict(self.headers)))
                reply = fake._next()
                if not self.path.endswith("/converse-stream"):
                    return self._error("UnknownOperationException", 404, "only ConverseStream is faked")
                if reply.error is not None:
                    return self._error(reply.error, ERROR_STATUS.get(reply.error, 400), reply.message)
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.amazon.eventstream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("x-amzn-RequestId", "fake-request")
                self.end_headers()
                try:
                    for pause, frame in reply.frames():
                        if pause and self._client_left(pause):
                            raise ConnectionResetError("the client closed the connection")
                        self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                        self.wfile.flush()
                    if reply.cut:
                        self.close_connection = True
                        return  # no terminating chunk: the body ends mid-stream
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        fake.disconnects.append(time.monotonic())
                    self.close_connection = True

            def _client_left(self, seconds: float) -> bool:
                """Wait ``seconds``, returning early (True) if the client closes its end meanwhile."""
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        return True
                return False

            def _error(self, code: str, status: int, message: str) -> None:
                payload = json.dumps({"message": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-bedrock", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def analysis(**changes: Any) -> dict[str, Any]:
    """A valid answer to the analyzer's structured call."""
    return {
        "intent": "compare retry strategies",
        "sub_questions": ["What does backoff do?"],
        "key_terms": ["backoff", "jitter"],
        "must_cover": ["exponential backoff"],
        **changes,
    }
