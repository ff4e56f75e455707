"""The analyzer and the writer backed by a model (``MODEL_PROVIDER`` openai or bedrock).

They keep the template agents' plans and step descriptions (the plan is the pipeline's, not the
model's) and replace the work of the step: the analyzer asks for a structured analysis, validated
by pydantic with one repair request; the writer streams its report, which ends with the list of the
sources it was given.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentic.agents.analyzer import AnalyzerAgent
from agentic.agents.base import AgentOutput, StepContext
from agentic.agents.passages import format_sources, parse_passages
from agentic.agents.prompts import Prompts
from agentic.agents.writer import WriterAgent
from agentic.chat import ChatMessage, ChatRequest, StructuredSchema, Usage
from agentic.errors import PermanentAgentError
from agentic.models import ExecutionStep
from agentic.ports import ModelClient


class ModelAnalysis(BaseModel):
    """What the analyzer must answer; a model's answer is validated against it."""

    model_config = ConfigDict(extra="forbid")

    intent: str = Field(min_length=1, max_length=500)
    sub_questions: list[str] = Field(min_length=1, max_length=8)
    key_terms: list[str] = Field(max_length=12)
    must_cover: list[str] = Field(min_length=1, max_length=10)


def _string_list(description: str) -> dict[str, object]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


# Sent to the model: plain types only (strict JSON-schema modes accept no length bounds); the bounds
# are checked by ModelAnalysis, and a miss gets the repair request.
ANALYSIS_SCHEMA = StructuredSchema(
    name="task_analysis",
    description="The plan of the answer: intent, sub-questions, key terms, what it must cover.",
    schema={
        "type": "object",
        "properties": {
            "intent": {"type": "string", "description": "what the user wants, one sentence"},
            "sub_questions": _string_list("the questions the answer must settle, 1 to 8"),
            "key_terms": _string_list("the terms that matter, at most 12"),
            "must_cover": _string_list("the points the answer must cover, 1 to 10"),
        },
        "required": ["intent", "sub_questions", "key_terms", "must_cover"],
        "additionalProperties": False,
    },
)


def _problems(exc: ValidationError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the answer'}: {e['msg']}" for e in exc.errors()[:8])
    return f"it is not a JSON object ({exc})"


def parse_analysis(text: str) -> ModelAnalysis:
    """The model's answer as a ``ModelAnalysis``; ``ValueError``/``ValidationError`` say what is wrong."""
    cleaned = text.strip()
    if cleaned.startswith("```"):  # a fence around the JSON is a common, harmless slip
        cleaned = cleaned.strip("`").removeprefix("json").strip()
    return ModelAnalysis.model_validate(json.loads(cleaned))


def format_model_analysis(analysis: ModelAnalysis) -> str:
    return "\n".join(
        [
            f"Intent: {analysis.intent}",
            "Sub-questions:",
            *[f"  {i}. {q}" for i, q in enumerate(analysis.sub_questions, 1)],
            f"Key terms: {', '.join(analysis.key_terms) or '(none)'}",
            "The answer must cover:",
            *[f"  - {point}" for point in analysis.must_cover],
        ]
    )


def sources_section(retrieved: str) -> str:
    """The report's closing list of the passages the writer was given (or that none matched).

    Appended by the code, not asked of the model: the list is always there, always complete, and
    names only passages the writer really had.
    """
    return "\n\n" + format_sources(parse_passages(retrieved))


class _ModelBacked:
    def __init__(self, model: ModelClient, prompts: Prompts, *, max_output_tokens: int, temperature: float) -> None:
        self.model = model
        self.prompts = prompts
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature

    def _request(self, system: str, messages: list[ChatMessage]) -> ChatRequest:
        return ChatRequest(
            system=system,
            messages=tuple(messages),
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
        )


class ModelAnalyzerAgent(_ModelBacked, AnalyzerAgent):
    """Plans like the template analyzer; analyses with the model."""

    def __init__(self, model: ModelClient, prompts: Prompts, *, max_output_tokens: int, temperature: float) -> None:
        AnalyzerAgent.__init__(self)
        _ModelBacked.__init__(self, model, prompts, max_output_tokens=max_output_tokens, temperature=temperature)

    async def invoke(self, step: ExecutionStep, context: StepContext) -> AgentOutput:
        retrieved = context.outputs.get("retriever", "(nothing was retrieved)")
        system = self.prompts.render("analyzer_system")
        messages = [ChatMessage("user", self.prompts.render("analyzer_user", task=context.task, passages=retrieved))]
        usage = Usage()
        problems = ""
        for attempt in range(2):  # the answer, then one repair request
            reply = await self.model.structured(self._request(system, messages), ANALYSIS_SCHEMA)
            usage += reply.usage
            try:
                analysis = parse_analysis(reply.text)
            except (ValidationError, ValueError) as exc:
                problems = _problems(exc)
                if attempt == 0:
                    messages += [
                        ChatMessage("assistant", reply.text or "(empty)"),
                        ChatMessage("user", self.prompts.render("repair", errors=problems)),
                    ]
                continue
            return AgentOutput(format_model_analysis(analysis), usage, self.model.model_id)
        raise PermanentAgentError(
            f"the model's analysis was invalid twice (MODEL_ID={self.model.model_id}): {problems}"
        )

    async def execute(self, step: ExecutionStep, context: StepContext) -> str:
        return (await self.invoke(step, context)).text


class ModelWriterAgent(_ModelBacked, WriterAgent):
    """Streams the report from the model; the runner batches the pieces into ``partial_output`` deltas."""

    def __init__(self, model: ModelClient, prompts: Prompts, *, max_output_tokens: int, temperature: float) -> None:
        WriterAgent.__init__(self)
        _ModelBacked.__init__(self, model, prompts, max_output_tokens=max_output_tokens, temperature=temperature)

    async def invoke(self, step: ExecutionStep, context: StepContext) -> AgentOutput:
        retrieved = context.outputs.get("retriever", "(nothing was retrieved)")
        user = self.prompts.render(
            "writer_user",
            task=context.task,
            passages=retrieved,
            analysis=context.outputs.get("analyzer", "(no analysis)"),
        )
        request = self._request(self.prompts.render("writer_system"), [ChatMessage("user", user)])
        on_delta = context.on_delta
        reply = await self.model.stream(request, on_delta or _discard)
        tail = sources_section(context.outputs.get("retriever", ""))
        if on_delta is not None:
            await on_delta(tail)
        return AgentOutput(reply.text + tail, reply.usage, self.model.model_id)

    async def execute(self, step: ExecutionStep, context: StepContext) -> str:
        return (await self.invoke(step, context)).text


async def _discard(_: str) -> None:
    return None
