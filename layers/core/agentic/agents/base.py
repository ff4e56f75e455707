"""The agent interface: ``async execute(step, context) -> str``."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from agentic.models import ExecutionStep


@dataclass
class StepContext:
    """What an agent may read: the task and the outputs of the steps before it, by agent type."""

    task_id: str
    task: str
    attempt: int = 0
    outputs: dict[str, str] = field(default_factory=dict)


class Agent(ABC):
    #: The agent type the registry files it under and plans name in their steps.
    agent_type: str
    #: The seed's simulated latency in seconds, multiplied by AGENT_LATENCY_SCALE.
    base_latency: float = 0.1

    def __init__(self, latency_scale: float = 1.0) -> None:
        self.latency_scale = latency_scale

    async def execute(self, step: ExecutionStep, context: StepContext) -> str:
        delay = self.base_latency * self.latency_scale
        if delay > 0:
            await asyncio.sleep(delay)  # stands for the model/tool call an agent would make
        return self.run(step, context)

    @abstractmethod
    def run(self, step: ExecutionStep, context: StepContext) -> str:
        """Do the agent's work (pure and synchronous; the simulated I/O wait happens in execute)."""

    def describe_step(self, task: str) -> tuple[str, dict[str, Any]]:
        """The description and input data of this agent's step in a plan for ``task``."""
        return f"Run the {self.agent_type} agent", {}
