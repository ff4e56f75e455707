"""AnalyzerFunction: plans the task ({"action": "plan"}) and runs the analyzer step ({"action": "step"})."""

from agentic.aws.pipeline_handlers import agent_handler

handler = agent_handler("analyzer")
