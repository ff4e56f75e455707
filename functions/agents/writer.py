"""WriterFunction: runs the writer step, which produces the final report."""

from agentic.aws.pipeline_handlers import agent_handler

handler = agent_handler("writer")
