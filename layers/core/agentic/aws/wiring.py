"""Builds the AWS system from settings: DynamoDB store, Step Functions executor, the pipeline ops.

One system per Lambda container, built on the first invocation (``get_system``) and reused by the
warm ones. Building it creates no boto3 client: the adapters create theirs on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from agentic.adapters.model_clients import build_model_client
from agentic.agents.catalog import registry_for
from agentic.errors import AgenticError
from agentic.knowledge.base import KnowledgeBase
from agentic.pipeline import load_pipeline
from agentic.ports import Executor, TaskStore
from agentic.service.pipeline_ops import PipelineOps
from agentic.settings import Settings, get_settings

if TYPE_CHECKING:
    from agentic.adapters.s3_reader import S3DocumentReader
    from agentic.service.tasks import TaskService


class ConfigurationError(AgenticError):
    code = "configuration_error"


@dataclass
class AwsSystem:
    """What a function needs, each part built when first used: an agent function builds the store
    and the pipeline ops only, never the task service, the executor or the stream's waiter (cold
    start: it imports none of their modules either)."""

    settings: Settings
    store: TaskStore
    ops: PipelineOps
    #: What the retriever searches: the S3 index object (KNOWLEDGE_BUCKET), else the built-in documents.
    knowledge: KnowledgeBase | None = None
    sfn_client: Any | None = None

    @cached_property
    def executor(self) -> Executor:
        """Starts tasks; a function deployed without ``STATE_MACHINE_ARN`` cannot."""
        from agentic.adapters.sfn_executor import StepFunctionsExecutor, UnconfiguredExecutor

        if self.settings.state_machine_arn:
            return StepFunctionsExecutor(
                self.settings.state_machine_arn, self.sfn_client, retry_after_seconds=self.settings.retry_after_seconds
            )
        return UnconfiguredExecutor()

    @cached_property
    def service(self) -> TaskService:
        from agentic.adapters.dynamodb_store import DynamoDBPollingWaiter

        from .service import AwsTaskService

        settings = self.settings
        waiter = DynamoDBPollingWaiter(settings.stream_poll_min_seconds, settings.stream_poll_max_seconds)
        return AwsTaskService(self.store, self.executor, waiter, settings, ops=self.ops)

    @cached_property
    def documents(self) -> S3DocumentReader:
        """Reads task documents for the S3 trigger (its S3 client is built on first use)."""
        from agentic.adapters.s3_reader import S3DocumentReader

        return S3DocumentReader()


def build_aws_system(
    settings: Settings, *, dynamodb_client: Any | None = None, sfn_client: Any | None = None
) -> AwsSystem:
    """The AWS wiring (the executor and the task service are built on first use)."""
    if settings.store != "dynamodb":
        raise ConfigurationError(f"the AWS wiring runs on DynamoDB; STORE is {settings.store!r}")
    from agentic.adapters.dynamodb_store import DynamoDBTaskStore

    store = DynamoDBTaskStore(settings.table_name, dynamodb_client)
    knowledge: KnowledgeBase | None = None
    if settings.knowledge_bucket:
        from .knowledge_handlers import build_s3_knowledge

        knowledge = build_s3_knowledge(settings)
    model = build_model_client(settings)
    ops = PipelineOps.configured(
        store, registry_for(settings, model, knowledge), load_pipeline(settings.pipeline_definition), settings
    )
    return AwsSystem(settings, store, ops, knowledge=knowledge, sfn_client=sfn_client)


@lru_cache(maxsize=1)
def get_system() -> AwsSystem:
    """The container's system, from the environment (built once, on first use)."""
    return build_aws_system(get_settings())


def reset_system() -> None:
    """Forget the cached settings and system (tests change the environment between cases)."""
    get_settings.cache_clear()
    get_system.cache_clear()
