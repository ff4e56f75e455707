"""Picks the model adapter for MODEL_PROVIDER (the wirings call this; ``template`` needs none).

Each adapter is imported only when chosen: a deployment on Bedrock never imports httpx's stack for
it, and the template default imports neither.
"""

from __future__ import annotations

from agentic.ports import ModelClient
from agentic.settings import Settings


def build_model_client(settings: Settings, *, api_key: str | None = None) -> ModelClient | None:
    """The configured model, or None for the template agents.

    ``api_key`` overrides MODEL_API_KEY (on AWS it comes from Secrets Manager or SSM).
    """
    if settings.model_provider == "template":
        return None
    if settings.model_provider == "openai":
        from agentic.adapters.openai_model import OpenAIChatModel

        key = api_key
        if key is None and settings.model_api_key is not None:
            key = settings.model_api_key.get_secret_value() or None
        return OpenAIChatModel(
            settings.model_base_url, settings.model_id, api_key=key, timeout_seconds=settings.model_timeout_seconds
        )
    from agentic.adapters.bedrock_model import BedrockChatModel

    return BedrockChatModel(settings.model_id, timeout_seconds=settings.model_timeout_seconds)
