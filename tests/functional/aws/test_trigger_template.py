"""template.yaml's trigger resources: what makes at-least-once delivery safe and nothing lost silently.

Parsed with cfn-lint's decoder, like test_template.py (which also runs cfn-lint and sam validate).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from agentic.triggers import S3_TASK_PREFIX
from tests.functional.aws.support import EVENTS, FUNCTIONS, ROOT
from tests.functional.aws.template_support import transformed_template

pytestmark = pytest.mark.functional

TEMPLATE = ROOT / "template.yaml"
TRIGGER_FUNCTIONS = {"S3TriggerFunction": "S3", "SqsTriggerFunction": "SQS"}
FOURTEEN_DAYS = 14 * 24 * 3600


def resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][name]["Properties"]
    return properties


def function_setting(template: dict[str, Any], name: str, setting: str) -> Any:
    """A function's property, or the Globals value it inherits."""
    return resource(template, name).get(setting, template["Globals"]["Function"].get(setting))


def the_event(template: dict[str, Any], function: str) -> dict[str, Any]:
    [event] = resource(template, function)["Events"].values()
    assert event["Type"] == TRIGGER_FUNCTIONS[function]
    properties: dict[str, Any] = event["Properties"]
    return properties


def statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return [s for p in resource(template, function)["Policies"] for s in p["Statement"]]


def actions(template: dict[str, Any], function: str) -> set[str]:
    found: set[str] = set()
    for s in statements(template, function):
        found.update([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    return found


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().removesuffix("_function")


# --- SQS ----------------------------------------------------------------------------------------------


def sqs_mapping(template: dict[str, Any]) -> dict[str, Any]:
    """The SQS trigger's event source mapping (declared, not a SAM SQS event: see the next test)."""
    assert "Events" not in resource(template, "SqsTriggerFunction")
    mapping = template["Resources"]["SqsTriggerEventSource"]
    assert mapping["Type"] == "AWS::Lambda::EventSourceMapping"
    properties: dict[str, Any] = mapping["Properties"]
    assert properties["FunctionName"] == {"Ref": "SqsTriggerFunction"}
    return properties


def test_the_sqs_event_reports_batch_item_failures(template):
    event = sqs_mapping(template)
    assert event["EventSourceArn"] == {"Fn::GetAtt": ["TaskQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= event["BatchSize"] <= 10


def test_the_sqs_trigger_may_read_only_its_queue(template):
    # SAM's SQS event would attach AWSLambdaSQSQueueExecutionRole (every queue of the account): the
    # mapping polls with an inline statement scoped to the task queue instead
    [queue] = [
        s for s in statements(template, "SqsTriggerFunction") if any(str(a).startswith("sqs:") for a in s["Action"])
    ]
    assert set(queue["Action"]) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    }
    assert queue["Resource"] == {"Fn::GetAtt": ["TaskQueue", "Arn"]}


def test_the_queue_redrives_to_the_dead_letter_queue(template):
    queue = resource(template, "TaskQueue")
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["TaskDeadLetterQueue", "Arn"]}
    assert 2 <= int(redrive["maxReceiveCount"]) <= 10
    dlq = resource(template, "TaskDeadLetterQueue")
    assert dlq["MessageRetentionPeriod"] == FOURTEEN_DAYS
    # the DLQ keeps a message longer than the queue could have held it
    assert dlq["MessageRetentionPeriod"] > queue.get("MessageRetentionPeriod", 345600)
    for name in ("TaskQueue", "TaskDeadLetterQueue", "S3TriggerFailureQueue"):
        assert resource(template, name)["SqsManagedSseEnabled"] is True, name


def test_the_visibility_timeout_is_at_least_six_times_the_function_timeout(template):
    timeout = function_setting(template, "SqsTriggerFunction", "Timeout")
    window = sqs_mapping(template).get("MaximumBatchingWindowInSeconds", 0)
    assert resource(template, "TaskQueue")["VisibilityTimeout"] >= 6 * timeout + window


def test_the_sqs_function_can_write_tasks_and_start_executions_only(template):
    assert actions(template, "SqsTriggerFunction") == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "states:StartExecution",
        "states:DescribeExecution",
        # issue 16: an Express execution's watchdog schedule; the task queue, scoped
        "scheduler:CreateSchedule",
        "scheduler:DeleteSchedule",
        "iam:PassRole",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    }


# --- S3 -----------------------------------------------------------------------------------------------


def test_the_bucket_notifies_created_objects_under_the_tasks_prefix(template):
    [notification] = resource(template, "TasksBucket")["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Function"] == {"Fn::GetAtt": ["S3TriggerFunction", "Arn"]}
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": S3_TASK_PREFIX}]
    assert S3_TASK_PREFIX == "tasks/"


def test_the_bucket_is_versioned_encrypted_and_private(template):
    bucket = resource(template, "TasksBucket")
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}  # the version id is in every event
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["LifecycleConfiguration"]["Rules"]


def test_the_s3_function_reads_exactly_the_tasks_bucket(template):
    [read] = [s for s in statements(template, "S3TriggerFunction") if "s3:GetObject" in s["Action"]]
    assert set(read["Action"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    # the same constructed name, not a !Ref (which would close a circular dependency), under tasks/
    bucket = resource(template, "TasksBucket")["BucketName"]["Fn::Sub"]
    assert read["Resource"]["Fn::Sub"] == ["arn:${AWS::Partition}:s3:::" + bucket[0] + "/tasks/*", bucket[1]]


def test_failed_s3_events_are_retried_twice_then_kept_in_a_queue(template):
    config = resource(template, "S3TriggerFunction")["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    queue = on_failure["Destination"]["Fn::GetAtt"][0]
    assert template["Resources"][queue]["Type"] == "AWS::SQS::Queue"
    assert resource(template, queue)["MessageRetentionPeriod"] == FOURTEEN_DAYS


# --- both ---------------------------------------------------------------------------------------------


def test_every_trigger_function_has_its_handler_and_event_files(template):
    for function, kind in TRIGGER_FUNCTIONS.items():
        props = resource(template, function)
        module, attribute = props["Handler"].rsplit(".", 1)
        assert (f"{props['CodeUri']}/{module}.py", attribute) == ("functions/" + FUNCTIONS[function][0], attribute)
        assert FUNCTIONS[function][1] == attribute
        files = sorted(EVENTS.glob(f"{snake(function)}_*.json"))
        assert files, f"no events/{snake(function)}_*.json for {function}"
        for path in files:
            records = json.loads(path.read_text())["Records"]
            assert {r.get("eventSource", r.get("EventSource")) for r in records} == {f"aws:{kind.lower()}"}, path


def test_triggered_tasks_have_a_configurable_owner_and_can_start(template):
    parameter = template["Parameters"]["TriggerOwner"]
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch(parameter["Default"])
    assert pattern.fullmatch("arn:aws:iam::123456789012:user/alice")
    assert pattern.fullmatch("arn:aws:sts::123456789012:assumed-role/ops/alice")
    assert not pattern.fullmatch("alice")
    for function in TRIGGER_FUNCTIONS:
        variables = resource(template, function)["Environment"]["Variables"]
        assert variables["TRIGGER_OWNER"]["Fn::If"][2] == {"Ref": "TriggerOwner"}
        assert variables["STATE_MACHINE_ARN"] == {"Ref": "PipelineStateMachine"}


def test_the_trigger_outputs(template):
    assert template["Outputs"]["TasksBucketName"]["Value"] == {"Ref": "TasksBucket"}
    assert template["Outputs"]["TaskQueueUrl"]["Value"] == {"Ref": "TaskQueue"}
    assert template["Outputs"]["TaskDeadLetterQueueUrl"]["Value"] == {"Ref": "TaskDeadLetterQueue"}


def _refs(node: Any, out: set[str]) -> None:
    """The logical ids a template fragment refers to (Ref, Fn::GetAtt, Fn::Sub)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                out.add(v)
            elif k == "Fn::GetAtt":
                out.add(v[0] if isinstance(v, list) else v.split(".")[0])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                out.update(x.split(".")[0] for x in re.findall(r"\$\{([^}!]+)\}", text))
                if not isinstance(v, str):
                    _refs(v[1], out)
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for x in node:
            _refs(x, out)


def _dependency_cycle(resources: dict[str, Any]) -> list[str] | None:
    deps = {}
    for name, r in resources.items():
        found: set[str] = set()
        _refs(r.get("Properties", {}), found)
        depends = r.get("DependsOn", [])
        found.update([depends] if isinstance(depends, str) else depends)
        deps[name] = sorted(found & set(resources))
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in deps[node]:
            if state.get(nxt) == 1:
                return [*path, nxt]
            if not state.get(nxt) and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for name in resources:
        if not state.get(name) and (cycle := visit(name, [name])):
            return cycle
    return None


def test_the_transformed_template_has_no_circular_dependency():
    # The S3 event makes the bucket depend on the function, so the function's role must not depend
    # on the bucket. Neither cfn-lint nor `sam validate --lint` reports such a cycle.
    if not (ROOT / ".venv-sam" / "bin" / "python").exists():
        pytest.skip("the SAM CLI's virtualenv (.venv-sam) is not installed")
    resources = transformed_template()["Resources"]
    cycle = _dependency_cycle(resources)
    assert cycle is None, " -> ".join(cycle or [])
    generated = set(resources)
    assert {"SqsTriggerEventSource", "S3TriggerFunctionEventInvokeConfig"} <= generated
