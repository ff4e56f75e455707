"""What the first deployment on a real account needs from template.yaml (issue 8).

Read from the template (cfn-lint's decoder) and, where SAM generates the resource, from the
transformed template: alarms (item 4), stream concurrency (6), the triggered tasks' owner (8), who may
invoke what (9, 10), the Web Adapter release (13), index projections (14), log retention (15) and
what survives a stack deletion (16).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from tests.functional.aws.support import ROOT
from tests.functional.aws.template_support import transformed_template

pytestmark = pytest.mark.functional

#: LambdaAdapterLayerArm64 version 25 is aws-lambda-web-adapter v0.9.1, the last stable release.
STABLE_WEB_ADAPTER_LAYER = 25
API_FUNCTIONS = ("CreateTaskFunction", "QueryTasksFunction")


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    resources: dict[str, Any] = transformed_template()["Resources"]
    return resources


def props(template: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][name]["Properties"]
    return properties


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def alarm_metrics(template: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        name: (a["Properties"]["Namespace"], a["Properties"]["MetricName"])
        for name, a in of_type(template, "AWS::CloudWatch::Alarm").items()
    }


# --- item 4: alarms ------------------------------------------------------------------------------------


def test_failed_executions_and_both_failure_queues_raise_alarms(template):
    metrics = alarm_metrics(template)
    assert ("AWS/States", "ExecutionsFailed") in metrics.values()
    assert ("Agentic", "TasksNotMarkedFailed") in metrics.values()
    queues = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in of_type(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/SQS"
    }
    assert queues == {"TaskDeadLetterQueue", "S3TriggerFailureQueue", "KnowledgeIndexDeadLetterQueue"}
    for name, alarm in of_type(template, "AWS::CloudWatch::Alarm").items():
        p = alarm["Properties"]
        assert (p["Threshold"], p["ComparisonOperator"], p["TreatMissingData"]) == (
            0,
            "GreaterThanThreshold",
            "notBreaching",
        ), name
        assert p["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def test_the_mark_failed_failure_is_counted_from_the_state_machine_log(template):
    [metric_filter] = of_type(template, "AWS::Logs::MetricFilter").values()
    p = metric_filter["Properties"]
    assert p["LogGroupName"] == {"Ref": "StateMachineLogGroup"}
    assert '"MarkFailedFailed"' in p["FilterPattern"]
    assert '$.type = "ExecutionFailed"' in p["FilterPattern"]
    [transformation] = p["MetricTransformations"]
    assert (transformation["MetricNamespace"], transformation["MetricName"]) == ("Agentic", "TasksNotMarkedFailed")
    asl = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())
    assert asl["States"]["MarkFailedFailed"] == {**asl["States"]["MarkFailedFailed"], "Error": "MarkFailedFailed"}
    assert props(template, "PipelineStateMachine")["Logging"]["Level"] in ("ERROR", "ALL")


# --- item 6: streams cannot starve the agents ------------------------------------------------------------


def test_the_stream_function_has_reserved_concurrency_from_a_parameter(template):
    parameter = template["Parameters"]["StreamReservedConcurrency"]
    assert parameter["Type"] == "Number"
    # no reservation by default: a reservation must leave 100 unreserved, which fails the first
    # deploy on accounts whose concurrency quota is 10 (issue 16)
    assert int(parameter["Default"]) == 0
    assert props(template, "StreamFunction")["ReservedConcurrentExecutions"] == {
        "Fn::If": ["StreamConcurrencyReserved", {"Ref": "StreamReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }


# --- item 8: triggered tasks have an owner a caller can be ---------------------------------------------


def test_triggered_tasks_belong_to_a_role_callers_can_assume(template):
    role = template["Resources"]["TriggeredTasksRole"]
    assert role["Condition"] == "CreateTriggeredTasksRole"
    assert template["Conditions"]["CreateTriggeredTasksRole"] == {"Fn::Equals": [{"Ref": "TriggerOwner"}, ""]}
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Principal"]["AWS"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    [policy] = role["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert statements["ListAndReadTasks"]["Action"] == "execute-api:Invoke"
    assert all("/GET/" in r["Fn::Sub"] for r in statements["ListAndReadTasks"]["Resource"])  # read only
    for function in ("S3TriggerFunction", "SqsTriggerFunction"):
        assert props(template, function)["Environment"]["Variables"]["TRIGGER_OWNER"] == {
            "Fn::If": [
                "CreateTriggeredTasksRole",
                {"Fn::GetAtt": ["TriggeredTasksRole", "Arn"]},
                {"Ref": "TriggerOwner"},
            ]
        }
    # a given owner must be a principal a caller can be: a user, a role (any session), root
    pattern = re.compile(template["Parameters"]["TriggerOwner"]["AllowedPattern"])
    for good in (
        "",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::123456789012:role/ops",
        "arn:aws:iam::123456789012:role/team/ops",
        "arn:aws:iam::123456789012:root",
    ):
        assert pattern.fullmatch(good), good
    for bad in ("alice", "arn:aws:iam::123456789012:group/devs", "arn:aws:iam::123456789012:policy/x"):
        assert not pattern.fullmatch(bad), bad


# --- item 9: nobody invokes the API and stream functions directly ------------------------------------------


def test_the_stream_function_url_needs_both_actions_and_invoke_only_through_the_url(template):
    [policy] = props(template, "TriggeredTasksRole")["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    url = statements["StreamThroughTheFunctionUrl"]
    assert url["Action"] == "lambda:InvokeFunctionUrl"
    assert url["Condition"] == {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}}
    invoke = statements["InvokeOnlyThroughTheFunctionUrl"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
    assert url["Resource"] == invoke["Resource"] == {"Fn::GetAtt": ["StreamFunction", "Arn"]}


def test_a_deny_policy_stops_direct_invokes_of_the_functions_that_trust_the_event(template):
    statements = {s["Sid"]: s for s in props(template, "DirectInvokeDenyPolicy")["PolicyDocument"]["Statement"]}
    api = statements["DenyDirectInvokeOfApiFunctions"]
    assert (api["Effect"], api["Action"]) == ("Deny", "lambda:InvokeFunction")
    assert "Condition" not in api
    denied = json.dumps(api["Resource"])
    assert all(function in denied for function in API_FUNCTIONS)
    stream = statements["DenyStreamInvokeOutsideItsUrl"]
    assert (stream["Effect"], stream["Action"]) == ("Deny", "lambda:InvokeFunction")
    assert stream["Condition"] == {"BoolIfExists": {"lambda:InvokedViaFunctionUrl": "false"}}
    assert template["Outputs"]["DirectInvokeDenyPolicyArn"]["Value"] == {"Ref": "DirectInvokeDenyPolicy"}


def test_only_api_gateway_for_this_api_may_invoke_the_api_functions(generated):
    permissions = [r["Properties"] for r in generated.values() if r["Type"] == "AWS::Lambda::Permission"]
    by_function: dict[str, list[dict[str, Any]]] = {}
    for p in permissions:
        name = p["FunctionName"].get("Ref") or p["FunctionName"]["Fn::GetAtt"][0]
        # A function with AutoPublishAlias (the SnapStart option) is invoked through its alias.
        by_function.setdefault(name.removesuffix("Aliaslive"), []).append(p)
    for function in API_FUNCTIONS:
        for p in by_function[function]:
            assert p["Principal"] == "apigateway.amazonaws.com"
            assert p["SourceArn"]["Fn::Sub"][1]["__ApiId__"] == {"Ref": "HttpApi"}
    assert "StreamFunction" not in by_function  # IAM callers only, through the URL (AuthType AWS_IAM)
    assert all(p["Principal"] != "*" for p in permissions)


# --- item 10: only the tasks bucket invokes the S3 trigger -------------------------------------------------


def test_the_s3_trigger_permission_names_the_bucket(template, generated):
    permissions = [
        r["Properties"]
        for r in generated.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["Principal"] == "s3.amazonaws.com"
    ]
    [permission] = permissions
    assert permission["FunctionName"] == {"Fn::GetAtt": ["S3TriggerFunction", "Arn"]}
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}
    bucket_name = props(template, "TasksBucket")["BucketName"]["Fn::Sub"]
    source = permission["SourceArn"]["Fn::Sub"]
    assert source[0] == "arn:${AWS::Partition}:s3:::" + bucket_name[0]
    assert source[1] == bucket_name[1]
    # the notification goes to the function, and only once the permission exists
    # (and to the knowledge queue once its policy lets the bucket send)
    assert template["Resources"]["TasksBucket"]["DependsOn"] == [
        "S3TriggerInvokePermission",
        "KnowledgeIndexQueuePolicy",
    ]
    [notification] = props(template, "TasksBucket")["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Function"] == {"Fn::GetAtt": ["S3TriggerFunction", "Arn"]}
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "tasks/"}]


# --- item 13: the Web Adapter ------------------------------------------------------------------------------


def test_the_web_adapter_is_the_last_stable_release_on_its_documented_port(template):
    parameter = template["Parameters"]["LambdaWebAdapterLayerVersion"]
    assert int(parameter["Default"]) == STABLE_WEB_ADAPTER_LAYER
    variables = props(template, "StreamFunction")["Environment"]["Variables"]
    assert variables["AWS_LWA_PORT"] == "8080"
    assert "PORT" not in variables
    assert '"${AWS_LWA_PORT:-8080}"' in (ROOT / "functions" / "stream" / "run.sh").read_text()


# --- item 14: indexes hold keys only -------------------------------------------------------------------


def test_the_indexes_project_keys_only(template):
    indexes = {i["IndexName"]: i for i in props(template, "TasksTable")["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"gsi1", "gsi2"}
    assert {i["Projection"]["ProjectionType"] for i in indexes.values()} == {"KEYS_ONLY"}


# --- item 15: log retention and pinned SDK ----------------------------------------------------------------


def test_every_function_logs_to_its_own_group_with_a_retention(template, generated):
    functions = [name for name, r in generated.items() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == 10
    for name in functions:
        group = generated[name]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert generated[group]["Type"] == "AWS::Logs::LogGroup", name
        assert generated[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    for name, group in of_type(template, "AWS::Logs::LogGroup").items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


def test_the_layer_pins_boto3_and_botocore_to_the_tested_versions():
    import subprocess
    import sys
    from importlib.metadata import version

    listed = subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", str(ROOT / "layers" / "core" / "Makefile"), "layer-requirements"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "LAYER_PYTHON": sys.executable},
    ).stdout.split()
    assert f"boto3=={version('boto3')}" in listed
    assert f"botocore=={version('botocore')}" in listed


# --- item 16: data survives the stack ---------------------------------------------------------------------


def test_the_table_and_the_bucket_are_retained(template):
    for name in ("TasksTable", "TasksBucket"):
        resource = template["Resources"][name]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain"), name


# --- item 12: the layer ships Python 3.13 bytecode ------------------------------------------------------


def _make(*args: str, **env: str) -> Any:
    import subprocess

    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "layers" / "core" / "Makefile"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
    )


def test_the_layer_is_compiled_to_unchecked_hash_pyc_for_python313(tmp_path):
    # Given a layer directory as the build leaves it (sources only)
    package = tmp_path / "python" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "py2_only.py").write_text("print 'a third-party file that is not Python 3'\n")
    # When the build compiles it
    result = _make("compile-layer", f"LAYER_DIR={tmp_path / 'python'}")
    # Then there is a 3.13 .pyc, hash-based and unchecked (flags 0b01), naming its /opt/python source
    assert result.returncode == 0, result.stdout + result.stderr
    pyc = package / "__pycache__" / "__init__.cpython-313.pyc"
    data = pyc.read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0b01
    assert b"/opt/python/pkg/__init__.py" in data
    assert not (package / "__pycache__" / "py2_only.cpython-313.pyc").exists()  # reported, skipped


def test_the_build_stops_with_a_clear_message_without_python313(tmp_path):
    result = _make(
        "compile-layer",
        f"LAYER_DIR={tmp_path}",
        PATH="/usr/bin:/bin",
        PYTHON313="",
        PYENV_ROOT=str(tmp_path / "no-pyenv"),
        HOME=str(tmp_path),
    )
    assert result.returncode != 0
    assert "No Python 3.13 found" in result.stderr
    assert "PYTHON313=" in result.stderr


def test_the_layer_build_compiles_after_installing():
    makefile = (ROOT / "layers" / "core" / "Makefile").read_text()
    build = makefile[makefile.index("build-CoreLayer:") :]
    assert build.index("--no-compile") < build.index("compile-layer LAYER_DIR=")
    assert "--invalidation-mode unchecked-hash" in makefile
    # discovered, not hard-coded
    assert "/usr/bin/python3.13" not in makefile
    assert "/root/" not in makefile
