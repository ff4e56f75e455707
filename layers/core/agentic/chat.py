"""What the core says to a model and what it gets back, whatever the provider.

The ``ModelClient`` port (``agentic.ports``) takes a ``ChatRequest`` and answers a ``ChatReply``;
the adapters (``adapters/openai_model.py``, ``adapters/bedrock_model.py``) translate these to their
provider's wire format and map the provider's errors to ``TransientAgentError`` /
``PermanentAgentError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

#: Called with each piece of text a streaming model produces, in order.
DeltaSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class StructuredSchema:
    """A JSON schema the answer must follow (``response_format`` on OpenAI, a tool on Bedrock)."""

    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    system: str
    messages: tuple[ChatMessage, ...]
    max_output_tokens: int
    temperature: float = 0.2


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True)
class ChatReply:
    text: str
    usage: Usage = field(default_factory=Usage)
    #: Why the model stopped ("stop", "length", "end_turn", "max_tokens", "tool_use", ...).
    finish_reason: str | None = None
