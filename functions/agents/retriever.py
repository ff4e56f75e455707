"""RetrieverFunction: runs the retriever step the state machine asks for (ids in, events to the store)."""

from agentic.aws.pipeline_handlers import agent_handler

handler = agent_handler("retriever")
