"""FinalizeFunction: {"action": "complete"} ends the task; {"action": "fail"} records the caught error."""

from agentic.aws.pipeline_handlers import finalize_handler

handler = finalize_handler()
