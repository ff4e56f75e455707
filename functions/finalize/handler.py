"""FinalizeFunction: {"action": "complete"} ends the task; {"action": "fail"} records the caught error;
{"action": "await_approval", "token"} records the AwaitApproval wait (through lambda:invoke.waitForTaskToken)."""

from agentic.aws.pipeline_handlers import finalize_handler

handler = finalize_handler()
