"""Least privilege (issue 8, item 11): each function may make exactly the AWS calls its code makes.

The template's inline statements are read from the SAM-transformed template (the roles SAM
generates), and compared with two things:

- ``GRANTS``, the table below: what each function's code calls, reviewed by hand;
- the calls the real handlers make while they run every path this suite drives (create, execute,
  list, status, the pipeline with a retry and a failure, the task controls, the triggers, the
  stream), recorded from
  the boto3 clients and attributed to the function that made them: each must be granted.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections import defaultdict
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from agentic.aws.wiring import get_system
from agentic.models import TaskStatus
from tests.functional.aws import support
from tests.functional.aws.support import OWNER, REGION, Pipeline, http_event, load_event
from tests.functional.aws.template_support import Resolver, function_roles, granted_statements, transformed_template

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

_WRITE = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
_EXECUTE = {"states:StartExecution", "states:DescribeExecution"}
#: The task controls (issue 9): cancel stops the task's execution (Standard), approve and retry
#: start a new execution (StartExecution, in _EXECUTE).
_CONTROL = {"states:StopExecution"}
#: The one-time schedules (issue 16): the approval's timeout (created at the gate, deleted by the
#: controls) and an Express execution's watchdog (created with each start), run as the scheduler's role.
_TIMER = {"scheduler:CreateSchedule", "scheduler:DeleteSchedule", "iam:PassRole"}
#: The SQS event source mapping polls the task queue with the function's role (issue 16: scoped).
_QUEUE = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
#: What each function's code calls (DynamoDB transactions need the action of each item: PutItem and
#: UpdateItem; a task that died is failed by whoever executes it, hence the writes of the stream).
GRANTS: dict[str, set[str]] = {
    "CreateTaskFunction": _WRITE | _EXECUTE | _CONTROL | _TIMER,
    "QueryTasksFunction": {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"},
    # + the knowledge index object and its ETag (issue 15)
    "RetrieverFunction": _WRITE | {"s3:GetObject", "s3:ListBucket"},
    "AnalyzerFunction": _WRITE,
    "WriterFunction": _WRITE | _TIMER,
    "FinalizeFunction": _WRITE,
    "StreamFunction": {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    | _EXECUTE
    | _TIMER,
    # + the on-failure destination of its asynchronous invocations (SAM grants it from EventInvokeConfig)
    "S3TriggerFunction": {"s3:GetObject", "s3:GetObjectVersion", "sqs:SendMessage"} | _WRITE | _EXECUTE | _TIMER,
    "SqsTriggerFunction": _WRITE | _EXECUTE | _TIMER | _QUEUE,
    # the knowledge documents and the index object, nothing of the tasks (issue 15)
    "KnowledgeIndexerFunction": {"s3:GetObject", "s3:PutObject", "s3:ListBucket"},
}
NEVER = {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:Scan", "dynamodb:DescribeTable"}


@pytest.fixture(scope="module")
def roles() -> dict[str, dict[str, Any]]:
    return function_roles(transformed_template())


def inline_actions(role: dict[str, Any], **parameters: str) -> set[str]:
    """What the role's inline policies allow, deployed with the template's defaults (or ``parameters``)."""
    actions: set[str] = set()
    for statement in granted_statements(role, Resolver(transformed_template(), **parameters)):
        assert statement["Effect"] == "Allow"
        granted = statement["Action"]
        actions.update([granted] if isinstance(granted, str) else granted)
    return actions


def test_each_function_is_granted_exactly_the_calls_its_code_makes(roles):
    assert set(roles) == set(GRANTS)
    for function, role in roles.items():
        actions = inline_actions(role)
        assert actions == GRANTS[function], function
        assert not actions & NEVER, function
        assert not any(a.endswith("*") for a in actions), function


#: What the model-backed analyzer and writer may call besides the store (issue 13), by configuration.
_BEDROCK = {"bedrock:InvokeModelWithResponseStream", "bedrock:InvokeModel"}
MODEL_GRANTS = {
    "bedrock": ({"ModelProvider": "bedrock", "ModelId": "anthropic.claude-3-5-haiku-20241022-v1:0"}, _BEDROCK),
    "openai+secret": (
        {"ModelProvider": "openai", "ModelId": "gpt-4o-mini", "ModelApiKeyParameter": "secretsmanager:agentic/key"},
        {"secretsmanager:GetSecretValue"},
    ),
    "openai+ssm": (
        {"ModelProvider": "openai", "ModelId": "gpt-4o-mini", "ModelApiKeyParameter": "ssm:/agentic/key"},
        {"ssm:GetParameter"},
    ),
    "openai without a key": ({"ModelProvider": "openai", "ModelId": "llama3.2"}, set()),
}


@pytest.mark.parametrize("configuration", MODEL_GRANTS)
def test_only_the_model_functions_get_the_model_provider_grants(roles, configuration):
    parameters, extra = MODEL_GRANTS[configuration]
    for function, role in roles.items():
        expected = GRANTS[function] | (extra if function in ("AnalyzerFunction", "WriterFunction") else set())
        assert inline_actions(role, **parameters) == expected, function


def test_the_read_only_function_cannot_write(roles):
    writes = {"dynamodb:PutItem", "dynamodb:UpdateItem", "states:StartExecution"} | _CONTROL
    assert not inline_actions(roles["QueryTasksFunction"]) & writes


def statements_granting(role: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The role's unconditional statements granting ``action``, unresolved (the model's grants are
    ``Fn::If`` policies, checked resolved in test_model_template.py)."""
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        if "PolicyDocument" in policy
        for statement in policy["PolicyDocument"]["Statement"]
        if action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    ]


def test_the_controls_are_granted_on_this_state_machine_only_where_iam_allows_it(roles):
    role = roles["CreateTaskFunction"]
    executions = (
        "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${PipelineStateMachine.Name}:*"
    )
    # StopExecution and DescribeExecution: this state machine's executions (the task's and its retries')
    for action in ("states:StopExecution", "states:DescribeExecution"):
        [statement] = statements_granting(role, action)
        assert statement["Resource"] == {"Fn::Sub": executions}, action
    # StartExecution (create, and each retry's new execution): the state machine itself
    [start] = statements_granting(role, "states:StartExecution")
    assert start["Resource"] == {"Ref": "PipelineStateMachine"}
    # the schedules: this stack's group only; the scheduler's role passed to EventBridge Scheduler only
    for function in ("CreateTaskFunction", "WriterFunction", "StreamFunction", "S3TriggerFunction"):
        [schedules] = statements_granting(roles[function], "scheduler:CreateSchedule")
        assert set(schedules["Action"]) == {"scheduler:CreateSchedule", "scheduler:DeleteSchedule"}
        assert "schedule/${TimerScheduleGroup}/*" in json.dumps(schedules["Resource"]), function
        [passing] = statements_granting(roles[function], "iam:PassRole")
        assert passing["Resource"] == {"Fn::GetAtt": ["TimerSchedulerRole", "Arn"]}, function
        assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
    # no other function may stop executions
    for function, other in roles.items():
        if function != "CreateTaskFunction":
            assert not inline_actions(other) & _CONTROL, function


def test_the_state_machine_may_invoke_the_finalize_function_for_mark_failed():
    # MarkFailed invokes the finalize function: the state machine's role needs lambda:InvokeFunction
    # on it (SAM's LambdaInvokePolicy grants it on the function's ARN and its qualifiers).
    template = transformed_template()
    role = template["Resources"]["PipelineStateMachineRole"]
    invokes = [
        statement
        for policy in role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in statement["Action"]
    ]
    resources = json.dumps([s["Resource"] for s in invokes])
    assert "${functionName}*" in resources
    assert '"functionName": {"Ref": "FinalizeFunction"}' in resources


def test_no_function_gets_a_broad_policy_template(roles):
    for function, role in roles.items():
        managed = {arn if isinstance(arn, str) else json.dumps(arn) for arn in role["Properties"]["ManagedPolicyArns"]}
        allowed = {
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        }
        if function == "KnowledgeIndexerFunction":  # its event source mapping polls the knowledge queue
            allowed.add("arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole")
        # (not for the SQS trigger: its queue actions are scoped to its queue)
        assert managed <= allowed, function


# --- the calls the handlers really make --------------------------------------------------------------

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("function", default=None)
_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
_PREFIX = {"dynamodb": "dynamodb", "stepfunctions": "states", "s3": "s3", "scheduler": "scheduler"}


def iam_actions(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """The IAM actions one API call needs."""
    prefix = _PREFIX[service]
    if operation == "TransactWriteItems":
        return sorted({f"dynamodb:{_ITEM_ACTIONS[next(iter(item))]}" for item in params["TransactItems"]})
    if operation == "GetObject" and params.get("VersionId"):
        return ["s3:GetObjectVersion"]
    if operation == "ListObjectsV2":
        return ["s3:ListBucket"]
    if operation == "CreateSchedule":  # the schedule runs as a role the caller passes
        return ["scheduler:CreateSchedule", "iam:PassRole"]
    return [f"{prefix}:{operation}"]


@pytest.fixture
def recorded(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    calls: dict[str, set[str]] = defaultdict(set)
    real_invoke = support.invoke

    def attributed_invoke(function: str, event: dict[str, Any]) -> Any:
        token = _current.set(function)
        try:
            return real_invoke(function, event)
        finally:
            _current.reset(token)

    monkeypatch.setattr(support, "invoke", attributed_invoke)

    real_call = BaseClient._make_api_call

    def recording_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        function = _current.get()
        if function is not None:  # every client, however old (the API functions keep their app)
            calls[function].update(iam_actions(client.meta.service_model.service_name, operation, params))
        return real_call(client, operation, params)

    pipeline.configure(TRIGGER_OWNER=OWNER)
    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    return calls


def test_every_call_the_handlers_make_is_granted(recorded, pipeline, roles, tmp_path):
    invoke = support.invoke
    # the API: create and execute, replay an execute, list, list by status, read
    body = json.dumps({"description": "Explain least privilege", "execute": True})
    created = invoke("CreateTaskFunction", http_event("create_task_post.json", body=body))
    task_id = json.loads(created["body"])["task_id"]
    pipeline.wait(task_id)
    invoke("CreateTaskFunction", http_event("create_task_post.json", body=body))  # attaches: DescribeExecution
    invoke("QueryTasksFunction", http_event("query_tasks_list.json"))
    invoke("QueryTasksFunction", http_event("query_tasks_list.json", queryStringParameters={"status": "completed"}))
    invoke("QueryTasksFunction", http_event("query_tasks_status.json", task_id=task_id))
    # the pipeline with a retry, and with a permanent failure
    for faults in ("retriever:transient:1", "writer:permanent"):
        pipeline.configure(FAULTS=faults)
        body = json.dumps({"description": f"Explain {faults}", "execute": True})
        event = http_event("create_task_post.json", body=body)
        del event["headers"]["idempotency-key"]
        pipeline.wait(json.loads(invoke("CreateTaskFunction", event)["body"])["task_id"])
    pipeline.configure(FAULTS="")
    # the task controls: approve (StartExecution of <task>-approved, DeleteSchedule), reject
    # (DeleteSchedule), cancel (DescribeExecution, StopExecution), retry (StartExecution of <task>-retry-1)
    for decision in ("approve", "reject", "cancel"):
        body = json.dumps({"description": f"Explain {decision}", "execute": True, "approval": True})
        event = http_event("create_task_post.json", body=body)
        del event["headers"]["idempotency-key"]
        waiting = json.loads(invoke("CreateTaskFunction", event)["body"])["task_id"]
        pipeline.wait(waiting)  # the run ends at the gate (the writer's function schedules the timeout)
        assert get_system().store.get(waiting).status is TaskStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
        assert (
            invoke("CreateTaskFunction", http_event(f"create_task_{decision}.json", task_id=waiting))["statusCode"]
            == 200
        )
        if decision == "approve":
            pipeline.wait(f"{waiting}-approved")
    body = json.dumps({"description": "Explain cancel", "execute": False})
    event = http_event("create_task_post.json", body=body)
    del event["headers"]["idempotency-key"]
    pending = json.loads(invoke("CreateTaskFunction", event)["body"])["task_id"]
    assert invoke("CreateTaskFunction", http_event("create_task_cancel.json", task_id=pending))["statusCode"] == 200
    assert invoke("CreateTaskFunction", http_event("create_task_retry.json", task_id=pending))["statusCode"] == 200
    pipeline.wait(f"{pending}-retry-1")
    # the triggers
    s3_event = load_event("s3_trigger_put.json")
    record = s3_event["Records"][0]["s3"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=record["bucket"]["name"])
    s3.put_bucket_versioning(Bucket=record["bucket"]["name"], VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket=record["bucket"]["name"], Key="tasks/least.txt", Body=b"Explain S3 grants")
    record["object"].update(key="tasks/least.txt", versionId=put["VersionId"], eTag=put["ETag"].strip('"'))
    for task in invoke("S3TriggerFunction", s3_event)["task_ids"]:
        pipeline.wait(task)
    invoke("SqsTriggerFunction", load_event("sqs_trigger_batch.json"))
    for execution in pipeline.sfn.list_executions(stateMachineArn=pipeline.state_machine_arn)["executions"]:
        pipeline.wait(execution["name"])
    # the knowledge base: the indexer writes the index object, a retriever then reads it
    from agentic.aws.knowledge_handlers import reset_indexer

    pipeline.configure(KNOWLEDGE_BUCKET=record["bucket"]["name"], KNOWLEDGE_CACHE_DIR=str(tmp_path / "kb"))
    reset_indexer()
    s3.put_object(
        Bucket=record["bucket"]["name"],
        Key="knowledge/runbooks/deploy and rollback.md",
        Body=b"# Grants\n\nLeast privilege.",
    )
    assert invoke("KnowledgeIndexerFunction", load_event("knowledge_indexer_put.json"))["indexed"]
    reset_indexer()
    body = json.dumps({"description": "Explain grants", "execute": True})
    event = http_event("create_task_post.json", body=body)
    del event["headers"]["idempotency-key"]
    pipeline.wait(json.loads(invoke("CreateTaskFunction", event)["body"])["task_id"])
    # the stream: execute a new task and stream it, then resume a finished one
    import httpx

    from tests.functional.aws.stream_support import identity_headers, stream_app

    fresh, _ = asyncio.run(get_system().service.create(OWNER, "Explain streams"))

    async def stream(path: str) -> None:
        transport = httpx.ASGITransport(app=stream_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
            response = (
                await client.post(path, headers=identity_headers())
                if path.endswith("execute")
                else (await client.get(path, headers=identity_headers()))
            )
            assert response.status_code == 200, response.text

    token = _current.set("StreamFunction")
    try:
        asyncio.run(stream(f"/tasks/{fresh.task_id}/execute"))
        asyncio.run(stream(f"/tasks/{task_id}/events?after=3"))
    finally:
        _current.reset(token)

    assert set(recorded) == set(GRANTS)  # every function was exercised
    for function, actions in recorded.items():
        assert actions <= inline_actions(roles[function]), (function, actions - inline_actions(roles[function]))
