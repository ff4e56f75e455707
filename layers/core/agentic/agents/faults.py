"""Fault injection for demos and tests: make an agent fail transiently or permanently.

Spec (FAULTS setting), comma-separated rules ``agent:kind[:arg]``:

- ``retriever:transient:2``   the first 2 attempts of every retriever step fail transiently
- ``writer:transient:p=0.3``  each writer attempt fails transiently with probability 0.3
- ``analyzer:permanent``      every analyzer step fails permanently
- ``*:transient:1``           every agent's first attempt fails

Rules act on the attempt number, so they behave the same in the local runner and in Lambda
(where the attempt comes from ``$$.State.RetryCount``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agentic.errors import InvalidInput, PermanentAgentError, TransientAgentError


@dataclass(frozen=True)
class FaultRule:
    agent_type: str
    permanent: bool
    failing_attempts: int = 0
    probability: float = 0.0

    def applies_to(self, agent_type: str) -> bool:
        return self.agent_type in ("*", agent_type)


@dataclass(frozen=True)
class FaultPlan:
    rules: tuple[FaultRule, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        rules = []
        for raw in filter(None, (part.strip() for part in spec.split(","))):
            parts = raw.split(":")
            if len(parts) < 2 or parts[1] not in ("transient", "permanent"):
                raise InvalidInput(
                    f"bad fault rule {raw!r}: use agent:transient:N, agent:transient:p=0.3 or agent:permanent"
                )
            agent, kind = parts[0], parts[1]
            if kind == "permanent":
                rules.append(FaultRule(agent, permanent=True))
                continue
            arg = parts[2] if len(parts) > 2 else "1"
            try:
                if arg.startswith("p="):
                    probability = float(arg[2:])
                    if not 0 <= probability <= 1:
                        raise ValueError(arg)
                    rules.append(FaultRule(agent, permanent=False, probability=probability))
                else:
                    rules.append(FaultRule(agent, permanent=False, failing_attempts=int(arg)))
            except ValueError:
                raise InvalidInput(f"bad fault rule {raw!r}: N must be an integer, p in [0, 1]") from None
        return cls(tuple(rules))

    def check(self, agent_type: str, attempt: int) -> None:
        """Raise the injected failure for this attempt, if any."""
        for rule in self.rules:
            if not rule.applies_to(agent_type):
                continue
            if rule.permanent:
                raise PermanentAgentError(f"injected permanent fault in {agent_type}")
            if attempt < rule.failing_attempts or (rule.probability and random.random() < rule.probability):
                raise TransientAgentError(f"injected transient fault in {agent_type} (attempt {attempt + 1})")
