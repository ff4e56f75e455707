"""template.yaml's streaming function: Lambda Web Adapter, response streaming, IAM auth, no Mangum.

Python Lambdas cannot stream natively and Mangum buffers, so the function must run uvicorn (run.sh)
behind the Web Adapter layer with the settings below, or the Function URL silently buffers.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.functional.aws.support import EVENTS, ROOT
from tests.functional.aws.template_support import transformed_template

pytestmark = pytest.mark.functional

TEMPLATE = ROOT / "template.yaml"
STREAM_DIR = ROOT / "functions" / "stream"
RUN_SH = STREAM_DIR / "run.sh"
ADAPTER_LAYER = re.compile(
    r"^arn:\$\{AWS::Partition\}:lambda:\$\{AWS::Region\}:753240598075:layer:LambdaAdapterLayerArm64:"
    r"\$\{LambdaWebAdapterLayerVersion\}$"
)


@pytest.fixture(scope="module")
def function(template: dict[str, Any]) -> dict[str, Any]:
    resource = template["Resources"]["StreamFunction"]
    assert resource["Type"] == "AWS::Serverless::Function"
    props: dict[str, Any] = resource["Properties"]
    return props


def is_adapter_layer(layer: Any) -> bool:
    return isinstance(layer, dict) and bool(ADAPTER_LAYER.match(str(layer.get("Fn::Sub", ""))))


def test_the_stream_function_runs_run_sh_behind_the_web_adapter_layer(template, function):
    assert function["Handler"] == "run.sh"
    assert function["CodeUri"].rstrip("/") == "functions/stream"
    # the adapter layer, its version a parameter; the core layer comes from Globals (SAM puts the
    # global layers first), so it is not repeated here
    assert [layer for layer in function["Layers"] if is_adapter_layer(layer)], function["Layers"]
    assert {"Ref": "CoreLayer"} in template["Globals"]["Function"]["Layers"]
    assert {"Ref": "CoreLayer"} not in function["Layers"]
    parameter = template["Parameters"]["LambdaWebAdapterLayerVersion"]
    assert parameter["Type"] == "Number"
    assert int(parameter["Default"]) == 25  # v0.9.1, the last stable release (26 is 1.0.0-rc1)
    assert function.get("Runtime", template["Globals"]["Function"]["Runtime"]) == "python3.13"
    assert function.get("Architectures", template["Globals"]["Function"]["Architectures"]) == ["arm64"]


def test_the_web_adapter_streams_and_checks_readiness_on_health(function):
    variables = function["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert variables["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert variables["AWS_LWA_READINESS_CHECK_PATH"] == "/health"
    assert "AWS_LWA_ENABLE_COMPRESSION" not in variables  # compression buffers
    assert variables["AWS_LWA_PORT"] == "8080"
    assert variables["STATE_MACHINE_ARN"] == {"Ref": "PipelineStateMachine"}


def test_a_stream_ends_on_its_own_before_the_function_times_out(function):
    variables = function["Environment"]["Variables"]
    timeout = int(function["Timeout"])
    max_seconds = float(variables["STREAM_MAX_SECONDS"])
    keepalive = float(variables["STREAM_KEEPALIVE_SECONDS"])
    assert 0 < max_seconds < timeout
    assert timeout - max_seconds >= 10  # room to write the stream_timeout line and close
    assert 0 < keepalive < max_seconds
    assert timeout <= 900


def test_the_function_url_is_iam_authenticated_and_streams(template, function):
    assert function["FunctionUrlConfig"] == {"AuthType": "AWS_IAM", "InvokeMode": "RESPONSE_STREAM"}
    assert "Events" not in function  # no API Gateway route: it would buffer the response
    assert template["Outputs"]["StreamUrl"]["Value"] == {"Fn::GetAtt": ["StreamFunctionUrl", "FunctionUrl"]}


def test_the_stream_function_reads_the_table_and_can_only_start_executions(function):
    [policy] = function["Policies"]
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    # reads the task and its log; writes only to fail a task whose execution died (issue 8, item 4);
    # an Express execution it starts gets a watchdog schedule (issue 16)
    assert actions == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "states:StartExecution",
        "states:DescribeExecution",
        "scheduler:CreateSchedule",
        "scheduler:DeleteSchedule",
        "iam:PassRole",
    }


def test_the_stream_function_has_its_event_files():
    assert {p.name for p in EVENTS.glob("stream_*.json")} >= {"stream_execute.json", "stream_events_resume.json"}


def test_no_mangum_in_the_stream_function():
    for path in STREAM_DIR.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert "mangum" not in path.read_text(encoding="utf-8").lower(), path


def test_run_sh_is_an_executable_lf_script_that_execs_uvicorn():
    raw = RUN_SH.read_bytes()
    assert b"\r" not in raw  # CRLF breaks the shebang in Lambda ("bad interpreter")
    assert raw.startswith(b"#!/bin/bash\n")
    assert raw.endswith(b"\n")
    assert RUN_SH.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) == (
        stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    )
    text = raw.decode()
    assert "/opt/python" in text  # the CoreLayer's packages (uvicorn, fastapi, the core)
    assert re.search(r'^exec python3 -m uvicorn .*--host 127\.0\.0\.1 .*--port "\$\{?AWS_LWA_PORT', text, re.MULTILINE)
    assert re.search(r"--lifespan on\b", text)
    assert re.search(r"\bapp:app\s*$", text, re.MULTILINE)
    # once committed, git must record it as executable too (Lambda keeps the zip's mode bits)
    if shutil.which("git") is None:
        return
    listed = subprocess.run(
        ["git", "ls-files", "--stage", "--", "functions/stream/run.sh"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.split()
    if listed:
        assert listed[0] == "100755", "git update-index --chmod=+x functions/stream/run.sh"


def test_sam_puts_both_layers_on_the_stream_function():
    """The merged template (SAM's own translator, from the SAM CLI's venv) has the core and adapter layers."""
    if not (ROOT / ".venv-sam" / "bin" / "python").exists():
        pytest.skip("SAM CLI is not installed (.venv-sam)")
    resources = transformed_template()["Resources"]
    merged = {
        "layers": resources["StreamFunction"]["Properties"]["Layers"],
        "url": resources["StreamFunctionUrl"]["Properties"],
        "core": [name for name, r in resources.items() if r["Type"] == "AWS::Lambda::LayerVersion"],
    }
    [core] = merged["core"]
    assert merged["layers"][0] == {"Ref": core}
    assert len(merged["layers"]) == 2
    assert is_adapter_layer(merged["layers"][1])
    assert merged["url"]["AuthType"] == "AWS_IAM"
    assert merged["url"]["InvokeMode"] == "RESPONSE_STREAM"


def test_the_stream_app_module_path_matches_the_handler_script():
    assert (STREAM_DIR / "app.py").is_file()
    assert re.search(r"^app = ", (STREAM_DIR / "app.py").read_text(), re.MULTILINE)
    assert Path(RUN_SH).name == "run.sh"
