"""All configuration, read from the environment once. Nothing else in the core reads ``os.environ``."""

# No ``from __future__ import annotations`` here: with it, defining the model compiles and evaluates
# each field's annotation from its string.
import contextlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

#: The shortest lease a renewal keeps under load (see ``Settings._leases_that_hold``).
MIN_LEASE_SECONDS = 2.0


class ModelPrice(BaseModel):
    """Dollars per 1M tokens."""

    model_config = ConfigDict(defer_build=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)


#: Settings given as JSON in their environment variable.
_JSON_FIELDS = frozenset({"model_prices"})


#: The most server processes ``WORKERS`` may ask for.
MAX_WORKERS = 64


class Settings(BaseModel):
    """Each field from the environment variable of its name in any case (``STORE``, ``store``); the
    keyword arguments of ``Settings(...)`` win over the environment.

    A plain pydantic model, not pydantic-settings' ``BaseSettings``: every Lambda function builds its
    settings at its first request, and importing pydantic-settings (its env, dotenv, CLI and cloud
    secret sources, argparse) cost each one about a fifth of ``import boto3``; reading variables by
    name is all it did here.
    """

    # Built by the first ``Settings()`` (a function's first request), not at import.
    model_config = ConfigDict(extra="ignore", defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        environment = {name.lower(): value for name, value in os.environ.items()}
        found: dict[str, Any] = {}
        for name in cls.model_fields:
            if name in values or name not in environment:
                continue
            value: Any = environment[name]
            if name in _JSON_FIELDS:
                # Text that is not JSON stays text: the field's own validation says what is wrong.
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            found[name] = value
        return {**found, **values}

    # --- wiring -------------------------------------------------------------------------------
    store: Literal["sqlite", "dynamodb"] = "sqlite"
    database_path: Path = Path(".data/agentic.db")
    table_name: str = "agentic-tasks"
    # DynamoDB: every owner's index keys are spread over this many shards by task id, so one owner's
    # writes (the triggers' owner takes every S3/SQS task) are not capped by one index partition; a
    # page of GET /tasks reads every shard. Raise it freely; lowering it hides the tasks of the
    # shards dropped (until it is raised again). At most dynamodb_listing.MAX_INDEX_SHARDS.
    index_shards: int = Field(default=8, ge=1, le=32)
    state_machine_arn: str | None = None
    # Where the pipeline (step order and retry policy) is defined; by default the packaged copy of
    # statemachine/pipeline.asl.json.
    pipeline_definition: Path | None = None

    # --- agents and retries -------------------------------------------------------------------
    agent_latency_scale: float = Field(default=1.0, ge=0, le=100)
    # Multiplies the ASL's IntervalSeconds/MaxDelaySeconds for the local runner: 0.1 turns the
    # state machine's 1 s, 2 s, 4 s into the seed's 0.1, 0.2, 0.4 s.
    retry_time_scale: float = Field(default=0.1, ge=0, le=10)
    # Step Functions applies JitterStrategy FULL; locally the seed's table is exact unless asked.
    local_retry_jitter: bool = False
    # Fault injection for demos and tests, e.g. "retriever:transient:2,writer:permanent" (off if empty).
    faults: str = ""

    # --- backpressure -------------------------------------------------------------------------
    max_concurrent_executions: int = Field(default=100, ge=1)
    max_queue_size: int = Field(default=100, ge=0)
    retry_after_seconds: int = Field(default=1, ge=1)

    # --- HTTP ----------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    # Server processes of `python -m agentic.local` on one port and one SQLite file: 1 (the default)
    # runs everything in one process on one core; one per core serves a burst on every core (the
    # first worker also follows KNOWLEDGE_DIR and INBOX_DIR). See the README's "Several processes".
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    api_token: SecretStr | None = None
    # Several callers locally: "alice=token1,bob=token2" (each token's tasks are its owner's own).
    api_tokens: SecretStr | None = None
    default_owner: str = "local"
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)

    # --- streams --------------------------------------------------------------------------------
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    # 0 = no limit. On Lambda, set below the function timeout so the stream ends cleanly.
    stream_max_seconds: float = Field(default=0.0, ge=0)
    stream_poll_min_seconds: float = Field(default=0.02, gt=0)
    stream_poll_max_seconds: float = Field(default=0.2, gt=0)

    # --- durable local execution ------------------------------------------------------------
    # A run owns its task through a lease in the store, renewed every LEASE_RENEW_SECONDS; a task
    # whose lease is LEASE_SECONDS old (its process died) is resumed by any live process.
    lease_seconds: float = Field(default=6.0, gt=0)
    lease_renew_seconds: float = Field(default=2.0, gt=0)
    # Finished tasks and their events are deleted this many days after they finished (0 = keep).
    retention_days: float = Field(default=30.0, ge=0)
    # How long a write waits for another process's transaction before the store reports 503.
    store_busy_timeout_seconds: float = Field(default=10.0, gt=0)
    # NORMAL: a committed write survives a crash of the process; FULL: also of the machine (an
    # fsync per commit, slower).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # The writes the server's event loop makes in one turn share one commit: more tasks/s and less
    # CPU per task under load, but each write waits for the turn's end (latency under bursts).
    sqlite_group_commit: bool = False
    # /health probes whether the store can be written at most this often.
    health_probe_seconds: float = Field(default=5.0, gt=0)

    # --- triggers -----------------------------------------------------------------------------
    # Owner of tasks started by S3 uploads and SQS messages (on AWS: the IAM ARN that should see
    # them through the API).
    trigger_owner: str = "triggers"
    max_document_bytes: int = Field(default=64 * 1024, ge=1)

    # A folder watched by the local server: a .txt or .json file dropped in it becomes a task.
    inbox_dir: Path | None = None
    inbox_poll_seconds: float = Field(default=0.5, gt=0)

    log_level: str = "INFO"
    # Powertools Tracer (X-Ray) in the Lambdas. Created only when on: it costs ~200 ms of cold start.
    tracing_enabled: bool = False

    # --- inbox: complete files only (issue 7) ---------------------------------------------------
    # A dropped file is taken once its size and modification time have not changed for this long
    # (and, on Linux, no process still holds it open for writing). 0 takes files as soon as seen.
    inbox_settle_seconds: float = Field(default=1.0, ge=0)

    # --- task control (issue 9) ----------------------------------------------------------------
    # Ask for approval before the final step when POST /tasks does not say (its "approval" field).
    require_approval: bool = False
    # How many times one task may be retried (POST /tasks/{id}/retry).
    max_task_retries: int = Field(default=3, ge=0, le=100)

    # --- AWS deployment (issue 8) ------------------------------------------------------------
    # Who owns a task on AWS (agentic.aws.identity): "role" = the caller's IAM principal (an assumed
    # role's sessions share the role's tasks); "session" = the full caller ARN, session name included.
    owner_identity: Literal["role", "session"] = "role"

    # --- clients and observability (issue 10) ---------------------------------------------------
    # Log one line per HTTP request (uvicorn's access log) from `python -m agentic.local`.
    access_log: bool = False

    # --- models (issue 13) ------------------------------------------------------------------------
    # template: the built-in deterministic agents (offline). openai: any OpenAI-compatible Chat
    # Completions server (OpenAI, Ollama, vLLM, llama.cpp, LM Studio). bedrock: Bedrock ConverseStream.
    model_provider: Literal["template", "openai", "bedrock"] = "template"
    model_id: str = ""
    model_base_url: str = "https://api.openai.com/v1"
    model_api_key: SecretStr | None = None
    # On AWS the key of an OpenAI-compatible server comes from Secrets Manager or SSM Parameter Store
    # (a SecureString), read once per container: "secretsmanager:<name or ARN>" or "ssm:<parameter name>".
    model_api_key_parameter: str = ""
    # One model request (connect, answer, stream) must end within this; below the steps' TimeoutSeconds.
    model_timeout_seconds: float = Field(default=60.0, gt=0)
    model_max_output_tokens: int = Field(default=2048, ge=16, le=200_000)
    model_temperature: float = Field(default=0.2, ge=0, le=2)
    # Dollars per 1M tokens, by model id: {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}.
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    # A folder whose analyzer_system.md, analyzer_user.md, writer_system.md, writer_user.md or
    # repair.md replace the packaged prompts of the same name.
    prompts_dir: Path | None = None
    # A streaming step's text reaches the stream in batches: one partial_output event per
    # STREAM_DELTA_SECONDS or per STREAM_DELTA_CHARS characters, whichever comes first.
    stream_delta_seconds: float = Field(default=0.1, gt=0, le=10)
    stream_delta_chars: int = Field(default=1000, ge=1, le=100_000)

    # --- AWS workflow type, approval timer, idle streams (issue 16) -----------------------------
    # The state machine's type (the template's WorkflowType): Express executions cannot be
    # described or stopped, so the executor leaves both to the store (fencing, the sweeper).
    workflow_type: Literal["STANDARD", "EXPRESS"] = "STANDARD"
    # The approval timeout on AWS: a one-time EventBridge Scheduler schedule in this group that
    # invokes the target (the finalize function) with this role. Unset: no timer (tests, local).
    approval_timeout_target_arn: str | None = None
    scheduler_role_arn: str | None = None
    approval_schedule_group: str = "default"
    # A stream with no new event for STREAM_IDLE_AFTER_SECONDS reads the log at most every
    # STREAM_IDLE_POLL_SECONDS (remote stores; the local store notifies).
    stream_idle_after_seconds: float = Field(default=10.0, ge=0)
    stream_idle_poll_seconds: float = Field(default=2.0, gt=0)
    # > 0: a stream whose task waits for a person ends with a stream_paused line telling the client
    # to come back after this many seconds (a held Lambda costs by the second); 0: it stays open.
    stream_approval_pause_seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _model_is_named(self) -> "Settings":
        if self.model_provider != "template" and not self.model_id.strip():
            raise ValueError(f"MODEL_PROVIDER={self.model_provider} needs MODEL_ID (the model to call)")
        if self.model_provider == "openai" and not self.model_base_url.startswith(("http://", "https://")):
            raise ValueError("MODEL_BASE_URL must start with http:// or https:// (e.g. http://localhost:11434/v1)")
        return self

    # --- knowledge base (issue 15) -------------------------------------------------------------
    # A folder of .md/.txt/.html/.pdf documents the retriever searches instead of the built-in ones
    # (local server). Its index is a SQLite file, by default knowledge.db beside DATABASE_PATH.
    knowledge_dir: Path | None = None
    knowledge_index_path: Path | None = None
    # Larger files are skipped (listed by GET /knowledge with the reason).
    knowledge_max_file_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    # How often the local server looks for added, changed and removed files.
    knowledge_poll_seconds: float = Field(default=1.0, gt=0)
    # Passages scoring below this (bm25, higher is better) are not cited: a question nothing
    # matches gets a report that says so. 0.1 drops matches on words most passages share. It applies
    # once the index holds 20 passages (in fewer, bm25 scores every word as common).
    knowledge_min_score: float = Field(default=0.1, ge=0)
    # Words a passage aims at (paragraphs are gathered up to it; never across a heading).
    knowledge_passage_words: int = Field(default=200, ge=20, le=2000)
    # On AWS: the bucket whose KNOWLEDGE_PREFIX objects are indexed into the KNOWLEDGE_INDEX_KEY
    # object (unset: the built-in documents), and how often a warm retriever checks its ETag.
    knowledge_bucket: str | None = None
    knowledge_prefix: str = "knowledge/"
    knowledge_index_key: str = "knowledge-index/index.sqlite"
    knowledge_refresh_seconds: float = Field(default=30.0, ge=0)
    # Where the retriever keeps its copy of the index object (Lambda: /tmp).
    knowledge_cache_dir: Path = Path("/tmp/agentic-knowledge")  # noqa: S108 - Lambda's only writable folder

    def knowledge_index_file(self) -> Path:
        """The local index file: KNOWLEDGE_INDEX_PATH, or knowledge.db beside the task database."""
        return self.knowledge_index_path or self.database_path.with_name("knowledge.db")

    @model_validator(mode="after")
    def _leases_that_hold(self) -> "Settings":
        # Under load a renewal comes late (a busy CPU, a GC pause, a write waiting for the lock); a
        # lease it cannot keep is taken over and its step runs again, spending the retry budget.
        if self.lease_seconds < MIN_LEASE_SECONDS:
            raise ValueError(
                f"LEASE_SECONDS={self.lease_seconds:g} is below the floor of {MIN_LEASE_SECONDS:g} s: "
                "a renewal delayed by load would lose the lease and run its step again"
            )
        if self.lease_renew_seconds * 3 > self.lease_seconds:
            raise ValueError(
                f"LEASE_RENEW_SECONDS={self.lease_renew_seconds:g} must be at most a third of "
                f"LEASE_SECONDS={self.lease_seconds:g}, so that a lease outlives two late renewals"
            )
        return self

    def owner_tokens(self) -> dict[str, str]:
        """token -> owner, from API_TOKEN (the default owner) and API_TOKENS."""
        tokens: dict[str, str] = {}
        if self.api_token is not None and self.api_token.get_secret_value():
            tokens[self.api_token.get_secret_value()] = self.default_owner
        if self.api_tokens is not None:
            for pair in self.api_tokens.get_secret_value().split(","):
                owner, sep, token = pair.strip().partition("=")
                if not sep or not owner or not token:
                    raise ValueError("API_TOKENS must look like 'alice=token1,bob=token2'")
                tokens[token] = owner
        return tokens


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
