"""Cold start: a Lambda function imports what its first request needs, not what another function uses.

Each case runs in a fresh interpreter (what a Lambda cold start is) with the deployed environment,
imports the handler module as Lambda does (its folder is the code root) and lists ``sys.modules``;
the first-call cases also invoke the handler once with its events/ file against moto. Timings live
in ``make coldstart`` (bench/coldstart.py); this guards which modules a function loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.functional.aws.support import EVENTS, ROOT, TABLE_NAME

pytestmark = pytest.mark.functional

#: Only the local server, the CLI or the stream function use these.
NEVER_ON_LAMBDA = ("uvicorn", "httpx", "fastapi_offline", "agentic.local", "agentic.cli", "agentic.api.ui")
#: Settings are a plain pydantic model (pydantic-settings' sources cost every function its import).
NO_SETTINGS_LIBRARY = ("pydantic_settings", "dotenv")
#: The knowledge index (SQLite FTS5, the splitter, the extractors) is the retriever's, at its first search.
KNOWLEDGE_INDEX = ("agentic.knowledge.index", "agentic.knowledge.builtin", "agentic.knowledge.split", "sqlite3")
#: The SQLite store is the local wiring's; the DynamoDB store shares only its key helpers.
SQLITE_STORE = ("agentic.adapters.sqlite_store", "agentic.adapters.sqlite_file", "agentic.adapters.local_events")
#: The HTTP API's: FastAPI and everything around it.
HTTP = ("fastapi", "starlette", "mangum", "agentic.api")
#: What the buffered API functions do not serve: the stream (its own function) and the knowledge search.
OTHER_ROUTES = ("agentic.api.routes.stream", "agentic.api.routes.knowledge", "agentic.api.docs")
#: The web framework: the API functions answer API Gateway's events without it (the answers they share
#: with the FastAPI app are in agentic.api.answers, which imports none of it).
WEB_FRAMEWORK = ("fastapi", "starlette", "mangum", "agentic.api.app", "agentic.api.routes", "agentic.api.errors")

AGENT_NEVER = NEVER_ON_LAMBDA + NO_SETTINGS_LIBRARY + KNOWLEDGE_INDEX + SQLITE_STORE + HTTP + ("agentic.service.tasks",)
API_NEVER = NEVER_ON_LAMBDA + NO_SETTINGS_LIBRARY + KNOWLEDGE_INDEX + SQLITE_STORE + OTHER_ROUTES
#: The API functions with ApiFront=lean (functions/api/lean.py) load no web framework at all.
LEAN_API_NEVER = API_NEVER + WEB_FRAMEWORK

ENV = {
    "STORE": "dynamodb",
    "TABLE_NAME": TABLE_NAME,
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "agentic",
    "POWERTOOLS_METRICS_NAMESPACE": "AgenticTests",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "PYDANTIC_DISABLE_PLUGINS": "__all__",
    "AGENT_LATENCY_SCALE": "0",
}

IMPORT = """
import json, sys
sys.path.insert(0, {folder!r})
import {module}
print(json.dumps(sorted(sys.modules)))
"""

#: moto in-process; the task of the events/ files written first, through the store alone (which every
#: function imports), so that what the handler loads is the handler's.
FIRST_CALL = """
import json, sys
import boto3
from moto import mock_aws
with mock_aws():
    from agentic.adapters.dynamodb_store import DynamoDBTaskStore, create_table
    from agentic.models import TaskState
    create_table(boto3.client("dynamodb", region_name="us-east-1"), {table!r})
    DynamoDBTaskStore({table!r}).create(TaskState(
        task_id="4e3a044c-1064-5105-a144-88be6ebc23d8",
        owner="arn:aws:iam::123456789012:user/alice",
        user_input="Explain how exponential backoff with jitter prevents retry storms",
    ))
    sys.path.insert(0, {folder!r})
    import {module}

    class Context:
        function_name = "cold"
        memory_limit_in_mb = 512
        aws_request_id = "00000000-0000-4000-8000-000000000000"
        function_version = "$LATEST"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cold"

        def get_remaining_time_in_millis(self):
            return 30000

    answer = {module}.{attribute}(json.loads(open({event!r}).read()), Context())
print(json.dumps({{"answer": answer, "modules": sorted(sys.modules)}}))
"""


def run_fresh(code: str) -> object:
    env = {**os.environ, **ENV}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def loaded(modules: object, prefixes: tuple[str, ...]) -> list[str]:
    assert isinstance(modules, list)
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize(
    ("function", "never"),
    [
        ("agents/retriever.py", AGENT_NEVER),
        ("agents/analyzer.py", AGENT_NEVER),
        ("agents/writer.py", AGENT_NEVER),
        ("finalize/handler.py", AGENT_NEVER),
        ("api/app.py", API_NEVER),
        ("api/lean.py", LEAN_API_NEVER),
    ],
)
def test_importing_a_handler_loads_nothing_its_function_does_not_use(function, never):
    # Given a fresh interpreter, as at a Lambda cold start
    folder, _, module = function.rpartition("/")
    # When the runtime imports the handler module
    modules = run_fresh(IMPORT.format(folder=str(ROOT / "functions" / folder), module=module.removesuffix(".py")))
    # Then nothing only another function (or the local server) uses is loaded
    assert loaded(modules, never) == []


@pytest.mark.parametrize(
    ("function", "attribute", "event", "expected", "never"),
    [
        ("agents/analyzer.py", "handler", "analyzer_plan.json", {"status": "executing"}, AGENT_NEVER),
        ("api/app.py", "query_handler", "query_tasks_status.json", {"statusCode": 200}, API_NEVER),
        # a body parsed and validated, the caller, the store, an error answered (the task is not awaiting approval)
        ("api/app.py", "create_handler", "create_task_reject.json", {"statusCode": 409}, API_NEVER),
        ("api/lean.py", "query_handler", "query_tasks_status.json", {"statusCode": 200}, LEAN_API_NEVER),
        ("api/lean.py", "create_handler", "create_task_reject.json", {"statusCode": 409}, LEAN_API_NEVER),
    ],
)
def test_the_first_request_loads_nothing_its_function_does_not_use(function, attribute, event, expected, never):
    # Given a fresh interpreter on moto, with the task of the events/ files created
    folder, _, module = function.rpartition("/")
    code = FIRST_CALL.format(
        table=TABLE_NAME,
        folder=str(ROOT / "functions" / folder),
        module=module.removesuffix(".py"),
        attribute=attribute,
        event=str(EVENTS / event),
    )
    # When the handler is imported and answers its first request
    result = run_fresh(code)
    assert isinstance(result, dict)
    assert expected.items() <= result["answer"].items()
    # Then that request loaded nothing only another function uses (the DynamoDB store no SQLite)
    assert loaded(result["modules"], never) == []
