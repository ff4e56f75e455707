"""S3TriggerFunction: an object created under tasks/ in the tasks bucket becomes a task and starts."""

from agentic.aws.trigger_handlers import s3_trigger_handler

handler = s3_trigger_handler()
