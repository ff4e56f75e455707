"""The model port over any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM, llama.cpp,
LM Studio), streamed with server-sent events.

Why ``httpx`` and not the ``openai`` package: the package retries on its own (twice by default, with
its own backoff), which would multiply with the state machine's Retry policy, and it imports ~3x
slower (cold start) and adds ~6 MB to the layer for what is here one POST and a line parser. httpx is
already what the CLI uses; it has no hidden retries, and leaving its ``stream`` context closes the
connection, which is how a cancelled step stops a model mid-answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from agentic.chat import ChatReply, ChatRequest, DeltaSink, StructuredSchema, Usage
from agentic.errors import PermanentAgentError, TransientAgentError
from agentic.observability import logger

#: Statuses worth another attempt (the pipeline's Retry policy decides how many and when).
_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def _error_detail(body: bytes) -> str:
    """The server's own words about an error, from an OpenAI-style ``{"error": {"message"}}`` body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:300]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)[:300]
    if isinstance(error, str):
        return error[:300]
    return text[:300]


def status_error(status: int, detail: str, *, model_id: str, base_url: str) -> Exception:
    """The core's error for an HTTP status from the model server: the one table of this adapter."""
    said = f": {detail}" if detail else ""
    if status in _TRANSIENT_STATUSES or status >= 500:
        return TransientAgentError(f"the model server answered {status}{said}")
    if status == 401:
        return PermanentAgentError(f"the model server refused the key (401){said}; check MODEL_API_KEY")
    if status == 403:
        return PermanentAgentError(
            f"the model server denied access (403){said}; check MODEL_API_KEY's permissions for MODEL_ID={model_id}"
        )
    if status == 404:
        return PermanentAgentError(
            f"the model server has no model {model_id!r} or no chat completions at {base_url} (404){said}; "
            "check MODEL_ID and MODEL_BASE_URL"
        )
    if status in (400, 413, 422) and any(w in detail.lower() for w in ("context", "too long", "maximum", "token")):
        return PermanentAgentError(
            f"the request does not fit the model ({status}){said}; lower MODEL_MAX_OUTPUT_TOKENS "
            "or choose a MODEL_ID with a longer context"
        )
    return PermanentAgentError(f"the model server refused the request ({status}){said}; check MODEL_ID={model_id}")


class OpenAIChatModel:
    """``ModelClient`` for ``POST {base_url}/chat/completions`` with ``stream: true``."""

    provider = "openai"

    def __init__(
        self,
        base_url: str,
        model_id: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_id = model_id
        self.timeout_seconds = timeout_seconds
        self._api_key = api_key
        self._transport = transport
        # A client belongs to the event loop it first ran on: Lambda handlers run each invocation in
        # a new loop (asyncio.run), the local server in one. Keep one client per loop.
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            headers = {"Accept": "text/event-stream"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout_seconds, connect=min(10.0, self.timeout_seconds)),
                transport=self._transport,
            )
            self._clients = {loop: client}  # clients of ended loops cannot be closed; drop them
        return client

    async def aclose(self) -> None:
        """Close the clients made on the running loop; forget those of other loops.

        A client can only be closed on its own loop: the local server runs pipelines on a loop of
        their own (stopped by then) and Lambda on a new loop per invocation, so those are dropped
        and their sockets go with the process.
        """
        clients, self._clients = self._clients, {}
        mine = clients.get(id(asyncio.get_running_loop()))
        if mine is not None:
            with contextlib.suppress(RuntimeError):
                await mine.aclose()

    def _body(self, request: ChatRequest, schema: StructuredSchema | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": [
                {"role": "system", "content": request.system},
                *({"role": m.role, "content": m.content} for m in request.messages),
            ],
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": schema.name,
                    "description": schema.description,
                    "schema": schema.schema,
                    "strict": True,
                },
            }
        return body

    async def structured(self, request: ChatRequest, schema: StructuredSchema) -> ChatReply:
        return await self._complete(self._body(request, schema), None)

    async def stream(self, request: ChatRequest, on_delta: DeltaSink) -> ChatReply:
        return await self._complete(self._body(request, None), on_delta)

    @asynccontextmanager
    async def _open(self, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        url = f"{self.base_url}/chat/completions"
        try:
            async with self._client().stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    detail = _error_detail(await response.aread())
                    raise status_error(response.status_code, detail, model_id=self.model_id, base_url=self.base_url)
                yield response
        except httpx.TimeoutException as exc:
            raise TransientAgentError(
                f"the model server did not answer within MODEL_TIMEOUT_SECONDS={self.timeout_seconds:g} "
                f"({type(exc).__name__})"
            ) from None
        except httpx.ConnectError as exc:
            raise TransientAgentError(f"cannot connect to MODEL_BASE_URL={self.base_url}: {exc}") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise TransientAgentError(
                f"the connection to the model server broke: {exc or type(exc).__name__}"
            ) from None
        except httpx.HTTPError as exc:  # anything else of the transport: worth another attempt
            raise TransientAgentError(f"the model request failed: {exc or type(exc).__name__}") from None

    async def _complete(self, body: dict[str, Any], on_delta: DeltaSink | None) -> ChatReply:
        parts: list[str] = []
        usage = Usage()
        finish: str | None = None
        done = False
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with self._open(body) as response:
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue  # comments (": keep-alive"), event names, blank separators
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        chunk = _parse_chunk(data)
                        if chunk.get("usage"):
                            usage = Usage(
                                int(chunk["usage"].get("prompt_tokens") or 0),
                                int(chunk["usage"].get("completion_tokens") or 0),
                            )
                        for choice in chunk.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                parts.append(text)
                                if on_delta is not None:
                                    await on_delta(text)
                            finish = choice.get("finish_reason") or finish
        except TimeoutError:
            raise TransientAgentError(
                f"the model did not finish within MODEL_TIMEOUT_SECONDS={self.timeout_seconds:g}"
            ) from None
        if not done and finish is None:
            raise TransientAgentError("the model's stream ended before its answer did (the connection was cut)")
        if finish == "length":
            logger.warning("the model stopped at MODEL_MAX_OUTPUT_TOKENS", extra={"model_id": self.model_id})
        return ChatReply("".join(parts), usage, finish)


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise TransientAgentError(f"the model server sent a malformed stream chunk: {data[:200]!r}") from None
    if not isinstance(chunk, dict):
        raise TransientAgentError(f"the model server sent a malformed stream chunk: {data[:200]!r}")
    error = chunk.get("error")
    if error:
        # Some servers report a failure inside an open stream (an overloaded backend, a crash).
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise TransientAgentError(f"the model server failed mid-answer: {message}")
    return chunk
