"""The agents this system ships with, registered under their types.

Apart from ``registry`` so that the registry does not import the agents that import it.
"""

from __future__ import annotations

from agentic.agents.analyzer import AnalyzerAgent
from agentic.agents.prompts import Prompts
from agentic.agents.registry import AgentRegistry
from agentic.agents.retriever import RetrieverAgent
from agentic.agents.writer import WriterAgent
from agentic.knowledge.base import KnowledgeBase
from agentic.pipeline import PipelineDefinition
from agentic.ports import ModelClient
from agentic.settings import Settings

#: The agents that call the model when MODEL_PROVIDER is not ``template``.
MODEL_AGENTS = ("analyzer", "writer")


def default_registry(latency_scale: float = 1.0, knowledge: KnowledgeBase | None = None) -> AgentRegistry:
    """``knowledge``: what the retriever searches (None: the bundled documents)."""
    return AgentRegistry(
        [
            RetrieverAgent(latency_scale=latency_scale, knowledge=knowledge),
            AnalyzerAgent(latency_scale=latency_scale),
            WriterAgent(latency_scale=latency_scale),
        ]
    )


def registry_for(
    settings: Settings, model: ModelClient | None, knowledge: KnowledgeBase | None = None
) -> AgentRegistry:
    """The template agents, with the analyzer and the writer calling ``model`` when there is one,
    and the retriever searching ``knowledge`` (None: the bundled documents)."""
    registry = default_registry(settings.agent_latency_scale, knowledge=knowledge)
    if model is None:
        return registry
    from agentic.agents.model_agents import ModelAnalyzerAgent, ModelWriterAgent

    prompts = Prompts(settings.prompts_dir)
    options = {"max_output_tokens": settings.model_max_output_tokens, "temperature": settings.model_temperature}
    registry.register(ModelAnalyzerAgent(model, prompts, **options))  # type: ignore[arg-type]
    registry.register(ModelWriterAgent(model, prompts, **options))  # type: ignore[arg-type]
    return registry


def check_model_settings(settings: Settings, definition: PipelineDefinition) -> None:
    """Raise ``ValueError`` for model settings the pipeline cannot honour.

    A model request must end before its step's ``TimeoutSeconds`` in the state-machine file, or the
    step times out (``States.Timeout``) while the model still answers and the model's own, clearer
    timeout error is never seen.
    """
    if settings.model_provider == "template":
        return
    Prompts(settings.prompts_dir)  # a PROMPTS_DIR that is not a folder
    for spec in definition.steps:
        timeout = spec.timeout_seconds
        if spec.agent_type in MODEL_AGENTS and timeout is not None and settings.model_timeout_seconds >= timeout:
            raise ValueError(
                f"MODEL_TIMEOUT_SECONDS={settings.model_timeout_seconds:g} must be below the {spec.step_id} "
                f"step's TimeoutSeconds ({spec.timeout_seconds:g} s in the state-machine file)"
            )
