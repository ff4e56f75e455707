"""template.yaml and the state machine it deploys: the properties the design requires.

Parsed with cfn-lint's own decoder (it understands !Ref, !Sub, !GetAtt); cfn-lint and, when
installed, `sam validate --lint` must find nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.functional.aws.support import ASL, EVENTS, FUNCTIONS, ROOT, SUBSTITUTIONS
from tests.functional.aws.template_support import Resolver

pytestmark = pytest.mark.functional

TEMPLATE = ROOT / "template.yaml"
#: What surfaces from Lambda and from the store that is worth a retry (issue 8, item 3).
INFRASTRUCTURE_ERRORS = {
    "RetryableStoreError",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
    "States.Timeout",
}
TRANSIENT_ERRORS = {"TransientAgentError", *INFRASTRUCTURE_ERRORS}
READ_ONLY_ACTIONS = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    definition: dict[str, Any] = json.loads(ASL.read_text())
    return definition


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().removesuffix("_function")


def test_functions_run_python313_on_arm64_with_tracing_and_powertools(template):
    function_globals = template["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["Tracing"] == "Active"
    variables = function_globals["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL", "TABLE_NAME"):
        assert name in variables
    assert variables["STORE"] == "dynamodb"
    for name, function in resources(template, "AWS::Serverless::Function").items():
        props = function["Properties"]
        assert props.get("Runtime", "python3.13") == "python3.13", name
        assert props.get("Architectures", ["arm64"]) == ["arm64"], name


def test_every_function_has_its_handler_file_and_event_files(template):
    functions = {
        name: function
        for name, function in resources(template, "AWS::Serverless::Function").items()
        # Web Adapter functions run a script, not a Python handler: test_stream_template.py checks them.
        if function["Properties"]["Handler"] != "run.sh"
    }
    assert set(functions) == set(FUNCTIONS)
    for name, function in functions.items():
        props = function["Properties"]
        handler = props["Handler"]
        # A handler chosen by a parameter (the API functions' ApiFront) is an Fn::If of two: both exist.
        for choice in handler["Fn::If"][1:] if isinstance(handler, dict) else [handler]:
            module, attribute = choice.rsplit(".", 1)
            source = ROOT / props["CodeUri"] / f"{module}.py"
            assert source.is_file(), name
            assert re.search(rf"^{attribute} = ", source.read_text(), re.MULTILINE), name
        # The default parameters deploy the handler the functional tests invoke.
        module, attribute = Resolver(template).resolve(handler).rsplit(".", 1)
        assert (f"{props['CodeUri']}/{module}.py", attribute) == ("functions/" + FUNCTIONS[name][0], FUNCTIONS[name][1])
        assert list(EVENTS.glob(f"{snake(name)}_*.json")), f"no events/{snake(name)}_*.json for {name}"


def inline_actions(function: dict[str, Any], template: dict[str, Any]) -> set[str]:
    """The actions of the function's statements, deployed with the template's default parameters."""
    actions: set[str] = set()
    for policy in function["Properties"]["Policies"]:
        # a statement granted only with some parameters (the model's, issue 13) is an Fn::If of one
        branches = policy["Fn::If"][1:] if set(policy) == {"Fn::If"} else [policy]
        for branch in branches:  # inline statements only: no broad policy templates
            assert branch == {"Ref": "AWS::NoValue"} or set(branch) == {"Statement"}, policy
    for policy in Resolver(template).resolve(function["Properties"]["Policies"]):
        for statement in policy["Statement"]:
            actions.update([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    return actions


def test_the_query_function_only_reads_and_the_create_function_can_start_executions(template):
    functions = resources(template, "AWS::Serverless::Function")
    assert inline_actions(functions["QueryTasksFunction"], template) == READ_ONLY_ACTIONS
    assert "states:StartExecution" in inline_actions(functions["CreateTaskFunction"], template)
    task_writes = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    for name in ("AnalyzerFunction", "FinalizeFunction"):
        assert inline_actions(functions[name], template) == task_writes, name
    # the retriever also reads the knowledge index object (issue 15)
    assert inline_actions(functions["RetrieverFunction"], template) == task_writes | {"s3:GetObject", "s3:ListBucket"}
    # the writer's step stands behind the approval gate: it schedules the wait's timeout
    timer = {"scheduler:CreateSchedule", "scheduler:DeleteSchedule", "iam:PassRole"}
    assert inline_actions(functions["WriterFunction"], template) == task_writes | timer


def test_the_api_uses_iam_auth_and_routes_each_path_to_its_function(template):
    api = resources(template, "AWS::Serverless::HttpApi")["HttpApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    routes = {}
    for name, function in resources(template, "AWS::Serverless::Function").items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] in ("S3", "SQS"):  # the trigger functions: test_trigger_template.py
                continue
            assert event["Type"] == "HttpApi"
            routes[(event["Properties"]["Method"], event["Properties"]["Path"])] = name
    assert routes == {
        ("POST", "/tasks"): "CreateTaskFunction",
        # the task controls (issue 9) write the task and call Step Functions: the create function
        ("POST", "/tasks/{task_id}/cancel"): "CreateTaskFunction",
        ("POST", "/tasks/{task_id}/approve"): "CreateTaskFunction",
        ("POST", "/tasks/{task_id}/reject"): "CreateTaskFunction",
        ("POST", "/tasks/{task_id}/retry"): "CreateTaskFunction",
        ("GET", "/tasks"): "QueryTasksFunction",
        ("GET", "/tasks/{task_id}/status"): "QueryTasksFunction",
        ("GET", "/health"): "QueryTasksFunction",
    }


def test_the_table_matches_the_store_schema(template):
    table = resources(template, "AWS::DynamoDB::Table")["TasksTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert {name: {(k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]} for name, i in indexes.items()} == {
        "gsi1": {("gsi1pk", "HASH"), ("gsi1sk", "RANGE")},
        "gsi2": {("gsi2pk", "HASH"), ("gsi1sk", "RANGE")},
    }
    assert {i["Projection"]["ProjectionType"] for i in indexes.values()} == {"KEYS_ONLY"}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert "DeletionProtectionEnabled" in table
    assert set(template["Parameters"]) >= {"Stage", "LogLevel", "DeletionProtection"}


def test_the_layer_is_built_by_its_makefile_for_arm64(template):
    layer = resources(template, "AWS::Serverless::LayerVersion")["CoreLayer"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["ContentUri"] == "layers/core"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    makefile = (ROOT / "layers" / "core" / "Makefile").read_text()
    assert "build-CoreLayer:" in makefile
    assert "--platform manylinux2014_aarch64 --implementation cp --python-version 3.13 --only-binary=:all:" in makefile
    assert "statemachine/pipeline.asl.json" in makefile


def test_the_workflow_type_is_a_parameter_and_every_placeholder_is_substituted(template, asl):
    machine = resources(template, "AWS::Serverless::StateMachine")["PipelineStateMachine"]["Properties"]
    assert machine["Type"] == {"Ref": "WorkflowType"}
    workflow = template["Parameters"]["WorkflowType"]
    assert (workflow["Default"], sorted(workflow["AllowedValues"])) == ("EXPRESS", ["EXPRESS", "STANDARD"])
    assert machine["DefinitionUri"] == "statemachine/pipeline.asl.json"
    placeholders = set(re.findall(r"\$\{(\w+)\}", ASL.read_text()))
    assert placeholders == set(machine["DefinitionSubstitutions"]) == set(SUBSTITUTIONS)
    for placeholder, function in SUBSTITUTIONS.items():
        # The "live" alias: a SnapStart snapshot serves only invocations of a published version.
        assert machine["DefinitionSubstitutions"][placeholder] == {"Ref": f"{function}.Alias"}
    invocable = {
        p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in machine["Policies"] if "LambdaInvokePolicy" in p
    }
    assert invocable == set(SUBSTITUTIONS.values())
    assert machine["Tracing"] == {"Enabled": True}
    assert machine["Logging"]["Destinations"]
    assert set(template["Outputs"]) >= {"ApiUrl", "TableName", "StateMachineArn"}


def test_agent_states_retry_transient_errors_with_backoff_and_full_jitter(asl):
    agent_states = {name: s for name, s in asl["States"].items() if s.get("Parameters", {}).get("action") == "step"}
    assert [s["Parameters"]["agent_type"] for s in agent_states.values()] == ["retriever", "analyzer", "writer"]
    for name, state in {"Plan": asl["States"]["Plan"], **agent_states}.items():
        [retry] = state["Retry"]
        assert set(retry["ErrorEquals"]) == TRANSIENT_ERRORS, name
        assert retry["BackoffRate"] == 2, name
        assert retry["MaxDelaySeconds"] > 0, name
        assert retry["JitterStrategy"] == "FULL", name
        assert state["Parameters"]["attempt.$"] == "$$.State.RetryCount", name
        [catch] = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"]
        assert catch["ResultPath"] == "$.error"
        assert asl["States"][catch["Next"]]["Parameters"]["action"] == "fail"


def test_a_run_without_approval_or_retries_enters_five_states_and_handled_failures_end_it_successfully(asl):
    # Route, Plan and the three steps (the last one completes the task): 5 billed transitions on Standard
    states = asl["States"]
    name, path = asl["StartAt"], []
    while name is not None:
        path.append(name)
        state = states[name]
        name = None if state.get("End") else state.get("Default", state.get("Next"))
    assert path == ["Route", "Plan", "Retrieve", "Analyze", "Write"]
    assert states["Write"]["Parameters"]["approval_timeout_seconds"] == 86400  # the gate stands before it
    # a caught failure is recorded and the execution ends there, not in a Fail state (no alarm)
    assert states["MarkFailed"].get("End") is True
    assert [n for n, s in states.items() if s["Type"] == "Fail"] == ["MarkFailedFailed"]


def test_cfn_lint_finds_nothing():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_sam_validate_lint_passes(tmp_path):
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    if not sam.exists():
        sam_on_path = shutil.which("sam")
        if sam_on_path is None:
            pytest.skip("SAM CLI is not installed (.venv-sam/bin/sam)")
        sam = Path(sam_on_path)
    result = subprocess.run(
        [str(sam), "validate", "--lint", "--template-file", str(TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SAM_CLI_TELEMETRY": "0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_snapstart_is_an_option_of_the_pipeline_and_api_functions(template):
    # Given the template, when SnapStart is left at its default, then it is off; each pipeline and
    # API function publishes a version behind "live" and snapshots it only when SnapStart is Enabled.
    assert template["Parameters"]["SnapStart"]["Default"] == "Disabled"
    assert template["Conditions"]["SnapStartOn"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "Enabled"]}
    functions = resources(template, "AWS::Serverless::Function")
    for name in [*SUBSTITUTIONS.values(), "CreateTaskFunction", "QueryTasksFunction"]:
        properties = functions[name]["Properties"]
        assert properties["AutoPublishAlias"] == "live", name
        assert properties["SnapStart"] == {"ApplyOn": {"Fn::If": ["SnapStartOn", "PublishedVersions", "None"]}}, name
