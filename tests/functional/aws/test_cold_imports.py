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
from collections.abc import Iterator
from typing import Any

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
SQLITE_STORE = (
    "agentic.adapters.sqlite_store",
    "agentic.adapters.sqlite_leases",
    "agentic.adapters.sqlite_documents",
    "agentic.adapters.sqlite_file",
    "agentic.adapters.sqlite_upkeep",
    "agentic.adapters.local_events",
)
#: The HTTP API's: FastAPI and everything around it.
HTTP = ("fastapi", "starlette", "mangum", "agentic.api")
#: What the buffered API functions do not serve: the stream (its own function) and the knowledge search.
OTHER_ROUTES = ("agentic.api.routes.stream", "agentic.api.routes.knowledge", "agentic.api.docs")
#: The web framework: the API functions answer API Gateway's events without it (the answers they share
#: with the FastAPI app are in agentic.api.answers, which imports none of it).
WEB_FRAMEWORK = ("fastapi", "starlette", "mangum", "agentic.api.app", "agentic.api.routes", "agentic.api.errors")

AGENT_NEVER = NEVER_ON_LAMBDA + NO_SETTINGS_LIBRARY + KNOWLEDGE_INDEX + SQLITE_STORE + HTTP + ("agentic.service.tasks",)
#: The request bodies (handed out by agentic.models on first access): the HTTP API's and the triggers'.
REQUEST_BODIES = ("agentic.request_models",)
#: A step's event loop and its delta batcher: loaded by a step's first call, not by planning or finalize.
STEP_LOOP = ("asyncio", "agentic.service.deltas")
#: Pydantic's plugin loader imports it when the first model is built; no model is built at import.
PLUGIN_LOADER = ("importlib.metadata",)
AGENT_IMPORT_NEVER = AGENT_NEVER + REQUEST_BODIES + STEP_LOOP + PLUGIN_LOADER
AGENT_FIRST_SEARCH_NEVER = tuple(m for m in AGENT_NEVER if m not in KNOWLEDGE_INDEX)
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
        ("agents/retriever.py", AGENT_IMPORT_NEVER),
        ("agents/analyzer.py", AGENT_IMPORT_NEVER),
        ("agents/writer.py", AGENT_IMPORT_NEVER),
        ("finalize/handler.py", AGENT_IMPORT_NEVER),
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


BUILT_MODELS = """
import json, sys
sys.path.insert(0, {folder!r})
import {module}
from pydantic import BaseModel

def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

print(json.dumps(sorted(
    f"{{m.__module__}}.{{m.__qualname__}}" for m in subclasses(BaseModel) if m.__pydantic_complete__
)))
"""


@pytest.mark.parametrize("function", ["agents/retriever.py", "agents/analyzer.py", "finalize/handler.py"])
def test_importing_an_agent_or_finalize_handler_builds_no_model(function):
    # Given a fresh interpreter
    folder, _, module = function.rpartition("/")
    # When the runtime imports the handler module
    built = run_fresh(BUILT_MODELS.format(folder=str(ROOT / "functions" / folder), module=module.removesuffix(".py")))
    # Then no pydantic model has its validator built yet: each is built by the first request using it
    assert built == []


@pytest.mark.parametrize(
    ("function", "attribute", "event", "expected", "never"),
    [
        ("agents/analyzer.py", "handler", "analyzer_plan.json", {"status": "executing"}, AGENT_NEVER),
        ("finalize/handler.py", "handler", "finalize_fail.json", {"status": "failed"}, AGENT_NEVER),
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


#: The handler alone in its interpreter, AWS on loopback (moto in the test's process: moto itself
#: imports asyncio, so the in-process cases above cannot tell whether the handler loaded it).
LOOPBACK_CALL = """
import json, sys
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

answer = {module}.handler(json.loads(open({event!r}).read()), Context())
print(json.dumps({{"answer": answer, "modules": sorted(sys.modules)}}))
"""


@pytest.fixture
def loopback_aws(aws_env: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto behind a loopback endpoint (bench/coldstart_aws.py), this process's environment restored after."""
    from bench.coldstart_aws import FakeAws

    saved = dict(os.environ)
    aws = FakeAws()  # sets this process's TABLE_NAME, the AWS credentials, the region
    try:
        yield aws
    finally:
        aws.close()
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize(
    ("function", "event", "prepare", "expected", "never"),
    [
        ("agents/analyzer.py", "analyzer_plan.json", "created", {"status": "executing"}, AGENT_NEVER),
        ("finalize/handler.py", "finalize_fail.json", "planned", {"status": "failed"}, AGENT_NEVER),
        # the retriever's first search loads the knowledge index
        ("agents/retriever.py", "retriever_step.json", "planned", {"status": "completed"}, AGENT_FIRST_SEARCH_NEVER),
    ],
)
def test_planning_and_finalize_run_no_event_loop_and_no_function_builds_a_request_body(
    loopback_aws, function, event, prepare, expected, never
):
    # Given the task of the events/ files in the state the event expects, AWS on loopback
    loopback_aws.prepare(prepare)
    folder, _, module = function.rpartition("/")
    code = LOOPBACK_CALL.format(
        folder=str(ROOT / "functions" / folder), module=module.removesuffix(".py"), event=str(EVENTS / event)
    )
    # When a fresh interpreter imports the handler and it answers its first request
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **ENV, "TABLE_NAME": os.environ["TABLE_NAME"], **loopback_aws.env},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert expected.items() <= result["answer"].items()
    # Then it loaded no request body, and only a step (not planning, not finalize) an event loop
    assert loaded(result["modules"], never + REQUEST_BODIES) == []
    if "step" not in event:
        assert loaded(result["modules"], STEP_LOOP) == []
    else:
        assert "asyncio" in result["modules"]
