"""Agent registry: the runner looks agents up by type, so a new agent needs no orchestrator change."""

from __future__ import annotations

from collections.abc import Iterable

from agentic.agents.base import Agent
from agentic.errors import PermanentAgentError


class AgentRegistry:
    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            self.register(agent)

    def register(self, agent: Agent) -> None:
        self._agents[agent.agent_type] = agent

    def get(self, agent_type: str) -> Agent:
        try:
            return self._agents[agent_type]
        except KeyError:
            # A plan naming an unknown agent cannot succeed by retrying.
            raise PermanentAgentError(f"no agent is registered for type {agent_type!r}") from None

    def __contains__(self, agent_type: object) -> bool:
        return agent_type in self._agents

    @property
    def types(self) -> list[str]:
        return sorted(self._agents)
