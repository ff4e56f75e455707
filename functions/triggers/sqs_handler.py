"""SqsTriggerFunction: each message on the task queue becomes a task and starts (partial batch failures)."""

from agentic.aws.trigger_handlers import sqs_trigger_handler

handler = sqs_trigger_handler()
