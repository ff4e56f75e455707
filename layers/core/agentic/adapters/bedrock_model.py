"""The model port over Amazon Bedrock's ``ConverseStream`` (boto3, already in the layer).

Structured answers use tool use: the model is given one tool whose input schema is the answer's and
is made to call it (``toolChoice``), and the tool's input is the answer. boto3 is synchronous: the
call and the reading of its event stream run in a worker thread that hands each piece to the event
loop; cancelling the step closes the event stream (and with it the HTTP connection) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ReadTimeoutError
from urllib3.exceptions import HTTPError as TransportError

from agentic.chat import ChatReply, ChatRequest, DeltaSink, StructuredSchema, Usage
from agentic.errors import PermanentAgentError, TransientAgentError
from agentic.observability import logger

#: Bedrock's error codes (raised by the call or inside the stream) worth another attempt.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "ModelNotReadyException",
        "ServiceUnavailableException",
        "ModelTimeoutException",
        "InternalServerException",
        "ModelStreamErrorException",
        "ServiceQuotaExceededException",
        "ModelErrorException",
    }
)


def client_error(exc: ClientError, model_id: str) -> Exception:
    """The core's error for a Bedrock ``ClientError``: the one table of this adapter."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    # An error inside the event stream has the event's name ("throttlingException"): one table for both.
    code = code[:1].upper() + code[1:]
    message = str(error.get("Message") or exc)[:300]
    if code in TRANSIENT_CODES:
        return TransientAgentError(f"Bedrock {code}: {message}")
    if code in ("AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"):
        return PermanentAgentError(
            f"Bedrock {code}: {message}; grant the function bedrock:InvokeModelWithResponseStream on "
            f"MODEL_ID={model_id} and enable the model's access in the Bedrock console"
        )
    if code == "ResourceNotFoundException":
        return PermanentAgentError(
            f"Bedrock {code}: {message}; check MODEL_ID={model_id} (a model or inference profile)"
        )
    if code == "ValidationException" and any(w in message.lower() for w in ("too long", "context", "token")):
        return PermanentAgentError(
            f"Bedrock {code}: {message}; lower MODEL_MAX_OUTPUT_TOKENS or choose a MODEL_ID with a longer context"
        )
    return PermanentAgentError(f"Bedrock {code or 'error'}: {message}; check MODEL_ID={model_id}")


class BedrockChatModel:
    """``ModelClient`` for ``bedrock-runtime`` ``ConverseStream``."""

    provider = "bedrock"

    def __init__(self, model_id: str, *, timeout_seconds: float = 60.0, client: Any | None = None) -> None:
        self.model_id = model_id
        self.timeout_seconds = timeout_seconds
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        # Built on first use (cold start), with boto3's own retries off: the state machine's Retry
        # policy is the one in force, and each attempt shows as step_retrying.
        with self._client_lock:
            if self._client is None:
                import boto3

                self._client = boto3.client(
                    "bedrock-runtime",
                    config=Config(
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=min(10.0, self.timeout_seconds),
                        read_timeout=self.timeout_seconds,
                    ),
                )
            return self._client

    async def aclose(self) -> None:
        return None

    def _arguments(self, request: ChatRequest, schema: StructuredSchema | None) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "modelId": self.model_id,
            "system": [{"text": request.system}],
            "messages": [{"role": m.role, "content": [{"text": m.content}]} for m in request.messages],
            "inferenceConfig": {"maxTokens": request.max_output_tokens, "temperature": request.temperature},
        }
        if schema is not None:
            arguments["toolConfig"] = {
                "tools": [
                    {
                        "toolSpec": {
                            "name": schema.name,
                            "description": schema.description,
                            "inputSchema": {"json": schema.schema},
                        }
                    }
                ],
                "toolChoice": {"tool": {"name": schema.name}},
            }
        return arguments

    async def structured(self, request: ChatRequest, schema: StructuredSchema) -> ChatReply:
        return await self._converse(self._arguments(request, schema), None)

    async def stream(self, request: ChatRequest, on_delta: DeltaSink) -> ChatReply:
        return await self._converse(self._arguments(request, None), on_delta)

    async def _converse(self, arguments: dict[str, Any], on_delta: DeltaSink | None) -> ChatReply:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        opened: list[Any] = []

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def read() -> None:
            try:
                response = self.client.converse_stream(**arguments)
                stream = response["stream"]
                opened.append(stream)
                if stop.is_set():
                    return
                for event in stream:
                    if stop.is_set():
                        return
                    put("event", event)
                put("end", None)
            except Exception as exc:  # handed to the loop, mapped there
                put("error", exc)
            finally:
                for stream in opened:
                    stream.close()

        reader = loop.run_in_executor(None, read)
        parts: list[str] = []
        tool_input: list[str] = []
        usage = Usage()
        stop_reason: str | None = None
        try:
            async with asyncio.timeout(self.timeout_seconds):
                while True:
                    kind, value = await queue.get()
                    if kind == "end":
                        break
                    if kind == "error":
                        raise self._mapped(value)
                    delta = value.get("contentBlockDelta", {}).get("delta", {})
                    if delta.get("text"):
                        parts.append(delta["text"])
                        if on_delta is not None:
                            await on_delta(delta["text"])
                    elif "toolUse" in delta:
                        tool_input.append(delta["toolUse"].get("input", ""))
                    if "messageStop" in value:
                        stop_reason = value["messageStop"].get("stopReason")
                    if "metadata" in value:
                        used = value["metadata"].get("usage", {})
                        usage = Usage(int(used.get("inputTokens", 0)), int(used.get("outputTokens", 0)))
                    # (an exception frame inside the stream reaches us as botocore's EventStreamError)
        except TimeoutError:
            raise TransientAgentError(
                f"Bedrock did not finish within MODEL_TIMEOUT_SECONDS={self.timeout_seconds:g}"
            ) from None
        finally:
            stop.set()
            for stream in opened:  # a cancelled or failed step: hang up now
                _hang_up(stream)
            reader.add_done_callback(lambda f: f.exception())  # the thread ends on the closed stream
        if stop_reason is None:
            # The body ended cleanly but the answer did not (a proxy or the service closed early):
            # what arrived is not the whole answer, so it must not become the step's output.
            raise TransientAgentError("Bedrock's stream ended before the answer did (no messageStop)")
        if stop_reason == "max_tokens":
            logger.warning("the model stopped at MODEL_MAX_OUTPUT_TOKENS", extra={"model_id": self.model_id})
        text = "".join(tool_input) if arguments.get("toolConfig") else "".join(parts)
        if arguments.get("toolConfig") and not tool_input and parts:
            text = "".join(parts)  # a model that answered in text instead of calling the tool
        return ChatReply(text, usage, stop_reason)

    def _mapped(self, exc: BaseException) -> Exception:
        if isinstance(exc, ClientError):
            return client_error(exc, self.model_id)
        if isinstance(exc, ReadTimeoutError):
            return TransientAgentError(
                f"Bedrock did not answer within MODEL_TIMEOUT_SECONDS={self.timeout_seconds:g}: {exc}"
            )
        if isinstance(exc, ConnectionError | BotoCoreError):
            return TransientAgentError(f"the connection to Bedrock failed: {exc}")
        if isinstance(exc, TransportError):  # the body broke off mid-answer
            return TransientAgentError(f"the connection to Bedrock broke mid-answer: {exc}")
        if isinstance(exc, json.JSONDecodeError):
            return TransientAgentError(f"Bedrock sent a malformed event: {exc}")
        return TransientAgentError(f"the Bedrock call failed: {type(exc).__name__}: {exc}")


def _hang_up(stream: Any) -> None:
    """End the connection of a ConverseStream whose reader thread may be blocked in a read.

    Closing the response from this thread would wait for the reader's lock (a model thinking for
    seconds keeps it), so the socket is shut down instead: the blocked read returns at once and the
    reader thread closes the connection (its ``finally``). Only without urllib3's ``shutdown``
    (before 2.3) is the stream closed from here.
    """
    shutdown = getattr(getattr(stream, "_raw_stream", None), "shutdown", None)
    with contextlib.suppress(Exception):  # an already closed or broken stream
        if shutdown is not None:
            shutdown()
            return
    with contextlib.suppress(Exception):
        stream.close()
