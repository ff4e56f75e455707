"""The agent interface: ``async execute(step, context) -> str``; ``invoke`` adds usage for model agents."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from agentic.chat import DeltaSink, Usage
from agentic.models import ExecutionStep


@dataclass
class StepContext:
    """What an agent may read: the task and the outputs of the steps before it, by agent type.

    ``on_delta`` is set by the runner for a step whose text streams to the client as it is made
    (batched into ``partial_output`` events with ``data.delta``); an agent that streams calls it with
    each new piece, in order, and returns the whole text as its output.
    """

    task_id: str
    task: str
    attempt: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    on_delta: DeltaSink | None = None


@dataclass(frozen=True)
class AgentOutput:
    """A step's result: its text and, for a model call, the tokens it used and the model's id."""

    text: str
    usage: Usage | None = None
    model_id: str | None = None


class Agent(ABC):
    #: The agent type the registry files it under and plans name in their steps.
    agent_type: str
    #: The seed's simulated latency in seconds, multiplied by AGENT_LATENCY_SCALE.
    base_latency: float = 0.1

    def __init__(self, latency_scale: float = 1.0) -> None:
        self.latency_scale = latency_scale

    async def invoke(self, step: ExecutionStep, context: StepContext) -> AgentOutput:
        """What the runner calls: the step's text, with the model's usage for a model-backed agent."""
        return AgentOutput(await self.execute(step, context))

    async def execute(self, step: ExecutionStep, context: StepContext) -> str:
        delay = self.base_latency * self.latency_scale
        if delay > 0:
            import asyncio  # loaded by whatever runs this coroutine; not at the agent functions' import

            await asyncio.sleep(delay)  # stands for the model/tool call an agent would make
        return self.run(step, context)

    @abstractmethod
    def run(self, step: ExecutionStep, context: StepContext) -> str:
        """Do the agent's work (pure and synchronous; the simulated I/O wait happens in execute)."""

    def describe_step(self, task: str) -> tuple[str, dict[str, Any]]:
        """The description and input data of this agent's step in a plan for ``task``."""
        return f"Run the {self.agent_type} agent", {}
