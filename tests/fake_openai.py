"""A real OpenAI-compatible Chat Completions server for tests and benchmarks (aiohttp, on loopback).

It answers ``POST /v1/chat/completions`` with ``stream: true`` as a real server does (server-sent
events, ``data: [DONE]``, a usage chunk when ``stream_options.include_usage`` is set), from a script:
each request takes the next answer queued for its kind (``structured`` when the request carries a
``response_format``, else ``stream``), or a default answer. It records every request it got and
every client that went away before its answer ended.

Runs in a thread with its own event loop, so a test (sync or async) and a server subprocess can both
talk to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_ANALYSIS = {
    "intent": "understand how retries with backoff avoid retry storms",
    "sub_questions": ["What is exponential backoff?", "Why add jitter?"],
    "key_terms": ["backoff", "jitter", "retry"],
    "must_cover": ["the backoff formula [1]", "full jitter [2]"],
}


@dataclass
class Answer:
    """One scripted answer: text in chunks, or an error status, possibly slow or cut short."""

    chunks: list[str] = field(default_factory=list)
    status: int = 200
    error_message: str = ""
    usage: tuple[int, int] | None = (100, 20)
    #: Seconds before the headers, and between chunks.
    delay_before: float = 0.0
    delay_between: float = 0.0
    #: Close the connection after this many chunks, without finishing the answer.
    cut_after: int | None = None
    #: With ``cut_after``: end the HTTP response cleanly there (no finish_reason, no [DONE]) instead
    #: of resetting the connection, as a proxy that drops an idle upstream does.
    cut_cleanly: bool = False
    finish_reason: str = "stop"

    @classmethod
    def text(cls, text: str, pieces: int = 10, **kw: Any) -> Answer:
        size = max(1, -(-len(text) // pieces))
        return cls(chunks=[text[i : i + size] for i in range(0, len(text), size)], **kw)

    @classmethod
    def json(cls, value: Any, **kw: Any) -> Answer:
        return cls.text(json.dumps(value), pieces=4, **kw)

    @classmethod
    def error(cls, status: int, message: str = "scripted error", **kw: Any) -> Answer:
        return cls(status=status, error_message=message, **kw)

    @classmethod
    def tokens(cls, n: int, **kw: Any) -> Answer:
        """``n`` one-word chunks ("w0 w1 ..."), like a model streaming ``n`` tokens."""
        return cls(chunks=[f"w{i} " for i in range(n)], usage=(500, n), **kw)


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    #: When the client went away before the answer ended (None: it read to the end).
    gone_at: float | None = None
    chunks_sent: int = 0
    #: When each chunk was written (monotonic).
    sent_at: list[float] = field(default_factory=list)
    #: Set when the client goes away before the answer ends.
    gone: threading.Event = field(default_factory=threading.Event)


class FakeOpenAI:
    def __init__(self) -> None:
        self.scripts: dict[str, deque[Answer]] = {"structured": deque(), "stream": deque()}
        self.default: dict[str, Answer] = {
            "structured": Answer.json(DEFAULT_ANALYSIS),
            "stream": Answer.text("Backoff spreads retries out [1]; jitter de-synchronises clients [2]."),
        }
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- scripting -----------------------------------------------------------------------------

    def queue(self, kind: str, *answers: Answer) -> FakeOpenAI:
        with self._lock:
            self.scripts[kind].extend(answers)
        return self

    def seen(self, kind: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if kind is None or _kind(s.body) == kind]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- serving -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        kind = _kind(body)
        seen = Seen(body, dict(request.headers), time.monotonic())
        with self._lock:
            self.requests.append(seen)
            answer = self.scripts[kind].popleft() if self.scripts[kind] else self.default[kind]
        if answer.delay_before:
            await asyncio.sleep(answer.delay_before)
        if answer.status != 200:
            return web.json_response(
                {"error": {"message": answer.error_message, "type": "scripted", "code": answer.status}},
                status=answer.status,
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            model = body.get("model", "fake")
            for index, chunk in enumerate(answer.chunks):
                if answer.cut_after is not None and index >= answer.cut_after:
                    if answer.cut_cleanly:
                        await response.write_eof()
                        return response
                    assert request.transport is not None
                    request.transport.close()  # a connection reset mid-answer
                    return response
                if index and answer.delay_between:
                    await asyncio.sleep(answer.delay_between)
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("client went away")
                await response.write(_sse({"model": model, "choices": [{"index": 0, "delta": {"content": chunk}}]}))
                seen.chunks_sent += 1
                seen.sent_at.append(time.monotonic())
            await response.write(
                _sse({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}]})
            )
            if answer.usage is not None and (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": answer.usage[0], "completion_tokens": answer.usage[1]}
                await response.write(_sse({"model": model, "choices": [], "usage": usage}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            seen.gone_at = time.monotonic()
            seen.gone.set()
        return response

    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._handle)
            # Cancel a handler whose client went away, as production servers do: that is what
            # records the disconnect of a client that stopped reading mid-answer.
            runner = web.AppRunner(app, handler_cancellation=True)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake model server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kind(body: dict[str, Any]) -> str:
    return "structured" if body.get("response_format") else "stream"


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()
