"""FinalizeFunction: {"action": "fail"} records the caught error (MarkFailed); {"action":
"approval_timeout"} and {"action": "execution_watchdog"} come from one-time schedules, an execution
status change from EventBridge (a run that died); {"action": "complete"} ends a task for executions
of the definition before the last step completed tasks itself."""

from agentic.aws.pipeline_handlers import finalize_handler

handler = finalize_handler()
