"""Builds the AWS system from settings: DynamoDB store, Step Functions executor, the pipeline ops.

One system per Lambda container, built on the first invocation (``get_system``) and reused by the
warm ones. Building it creates no boto3 client: the adapters create theirs on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from agentic.adapters.model_clients import build_model_client
from agentic.agents.catalog import check_model_settings, registry_for
from agentic.errors import AgenticError
from agentic.knowledge.base import KnowledgeBase
from agentic.pipeline import load_pipeline
from agentic.ports import Executor, TaskStore
from agentic.service.pipeline_ops import PipelineOps
from agentic.settings import Settings, get_settings

if TYPE_CHECKING:
    from agentic.adapters.s3_reader import S3DocumentReader
    from agentic.adapters.scheduler_timer import SchedulerApprovalTimer
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
    def timer(self) -> SchedulerApprovalTimer | None:
        """The approval timeout's schedules (None where the function has no scheduler to call)."""
        settings = self.settings
        if not (settings.approval_timeout_target_arn and settings.scheduler_role_arn):
            return None
        from agentic.adapters.scheduler_timer import SchedulerApprovalTimer

        return SchedulerApprovalTimer(
            settings.approval_timeout_target_arn, settings.scheduler_role_arn, settings.approval_schedule_group
        )

    @cached_property
    def executor(self) -> Executor:
        """Starts tasks; a function deployed without ``STATE_MACHINE_ARN`` cannot."""
        from agentic.adapters.sfn_executor import StepFunctionsExecutor, UnconfiguredExecutor

        settings = self.settings
        if settings.state_machine_arn:
            return StepFunctionsExecutor(
                settings.state_machine_arn,
                self.sfn_client,
                retry_after_seconds=settings.retry_after_seconds,
                workflow_type=settings.workflow_type,
                timer=self.timer,
            )
        return UnconfiguredExecutor()

    @cached_property
    def service(self) -> TaskService:
        from agentic.adapters.dynamodb_waiter import DynamoDBPollingWaiter

        from .service import AwsTaskService

        settings = self.settings
        waiter = DynamoDBPollingWaiter(
            settings.stream_poll_min_seconds,
            settings.stream_poll_max_seconds,
            idle_after=settings.stream_idle_after_seconds,
            idle_interval=settings.stream_idle_poll_seconds,
        )
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

    store = DynamoDBTaskStore(settings.table_name, dynamodb_client, index_shards=settings.index_shards)
    knowledge: KnowledgeBase | None = None
    if settings.knowledge_bucket:
        from .knowledge_handlers import build_s3_knowledge

        knowledge = build_s3_knowledge(settings)
    definition = load_pipeline(settings.pipeline_definition)
    try:
        check_model_settings(settings, definition)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    model = build_model_client(settings, api_key=model_api_key(settings))
    ops = PipelineOps.configured(store, registry_for(settings, model, knowledge), definition, settings)
    return AwsSystem(settings, store, ops, knowledge=knowledge, sfn_client=sfn_client)


def model_api_key(settings: Settings) -> str | None:
    """The OpenAI-compatible server's key from MODEL_API_KEY_PARAMETER, or None.

    ``secretsmanager:<secret name or ARN>`` (the secret's string) or ``ssm:<parameter name>`` (a
    SecureString, decrypted). Read with Powertools Parameters when the container builds its system,
    so once per container; a key that cannot be read stops the function with a clear error.
    """
    reference = settings.model_api_key_parameter.strip()
    if settings.model_provider != "openai" or not reference:
        return None
    kind, _, name = reference.partition(":")
    if kind not in ("secretsmanager", "ssm") or not name:
        raise ConfigurationError(
            f"MODEL_API_KEY_PARAMETER={reference!r} must be 'secretsmanager:<secret name or ARN>' or "
            "'ssm:<parameter name>'"
        )
    from aws_lambda_powertools.utilities import parameters

    try:
        if kind == "secretsmanager":
            value = parameters.get_secret(name, max_age=_KEY_CACHE_SECONDS)
        else:
            value = parameters.get_parameter(name, decrypt=True, max_age=_KEY_CACHE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        raise ConfigurationError(
            f"the model's API key could not be read from MODEL_API_KEY_PARAMETER={reference!r}: {exc}"
        ) from exc
    key = value.decode() if isinstance(value, bytes) else str(value)
    return key.strip() or None


#: Powertools' cache of the key: the container reads it when it builds its system; this only
#: matters to a rebuilt system (tests), which then reads it again after this long.
_KEY_CACHE_SECONDS = 300


@lru_cache(maxsize=1)
def get_system() -> AwsSystem:
    """The container's system, from the environment (built once, on first use)."""
    return build_aws_system(get_settings())


def reset_system() -> None:
    """Forget the cached settings and system (tests change the environment between cases)."""
    get_settings.cache_clear()
    get_system.cache_clear()
