"""A stand-in for AWS on loopback, for ``bench/coldstart.py``'s first-call column.

The handler under measure runs in its own fresh interpreter with ``AWS_ENDPOINT_URL`` pointing here,
so it imports and builds everything it would in Lambda (boto3 included) and nothing of moto. This
process serves its requests from moto's backends (``mock_aws``; moto's server mode would need Flask,
which the project does not install): each request is handed to moto's botocore stubber under the AWS
host its signature names. Before each invocation, ``prepare`` brings the task of the events/ files to
the state the event expects (as tests/functional/aws/test_handlers.py does).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REGION = "us-east-1"
TABLE_NAME = "agentic-coldstart"
OWNER = "arn:aws:iam::123456789012:user/alice"
#: The events/ files' task: events/create_task_post.json's Idempotency-Key, for OWNER.
IDEMPOTENCY_KEY = "events-demo-1"
DESCRIPTION = "Explain how exponential backoff with jitter prevents retry storms"
STATE_MACHINE = "pipeline"
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:123456789012:stateMachine:{STATE_MACHINE}"
_SCOPE = re.compile(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def _any(self) -> None:
        from botocore.awsrequest import AWSPreparedRequest
        from botocore.compat import HTTPHeaders
        from moto.core.models import botocore_stubber

        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        scope = _SCOPE.search(self.headers.get("authorization", ""))
        region, service = scope.groups() if scope else (REGION, "unknown")
        host = f"{service}.{region}.amazonaws.com"
        headers = HTTPHeaders()
        for name, value in self.headers.items():
            headers[name] = value
        headers.replace_header("Host", host) if "Host" in headers else headers.add_header("Host", host)
        request = AWSPreparedRequest(self.command, f"https://{host}{self.path}", headers, body, False)
        with self.server.lock:  # type: ignore[attr-defined]  # moto's backends are not thread-safe
            answer = botocore_stubber.process_request(request)
        status, out_headers, out_body = answer if answer is not None else (404, {}, b"no such AWS service")
        payload = out_body.encode() if isinstance(out_body, str) else bytes(out_body or b"")
        self.send_response(int(status))
        for name, value in out_headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "server", "date"):
                self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeAws:
    """moto behind a loopback HTTP endpoint; ``prepare(name)`` resets it and sets up one case."""

    def __init__(self) -> None:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "STORE": "dynamodb",
            "TABLE_NAME": TABLE_NAME,
            "AGENT_LATENCY_SCALE": "0",
            "STATE_MACHINE_ARN": STATE_MACHINE_ARN,
            "POWERTOOLS_LOG_LEVEL": "WARNING",  # this process's preparations, not the function's
        }.items():
            os.environ[name] = value
        from moto import mock_aws

        self._mock = mock_aws()
        self._mock.start()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.lock = threading.Lock()  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def env(self) -> dict[str, str]:
        """The environment of a function calling this stand-in."""
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AGENT_LATENCY_SCALE")
        return {
            **{k: os.environ[k] for k in keys},
            "STATE_MACHINE_ARN": STATE_MACHINE_ARN,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self._server.server_address[1]}",
        }

    def close(self) -> None:
        self._server.shutdown()
        self._mock.stop()

    def prepare(self, case: str) -> None:
        import boto3

        from agentic.adapters.dynamodb_store import create_table
        from agentic.aws.wiring import get_system, reset_system

        with self._server.lock:  # type: ignore[attr-defined]
            self._mock.reset()
            create_table(boto3.client("dynamodb", region_name=REGION), TABLE_NAME)
            boto3.client("stepfunctions", region_name=REGION).create_state_machine(
                name=STATE_MACHINE,
                definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}',
                roleArn="arn:aws:iam::123456789012:role/agentic-coldstart",
            )
            reset_system()
            PREPARE[case](get_system())


def _created(system: Any) -> str:
    task, _ = asyncio.run(system.service.create(OWNER, DESCRIPTION, idempotency_key=IDEMPOTENCY_KEY))
    return str(task.task_id)


def _planned(system: Any) -> str:
    task_id = _created(system)
    system.ops.plan(task_id)
    return task_id


def _after_two_steps(system: Any) -> str:
    task_id = _planned(system)
    for step_id in ("step_001", "step_002"):
        spec = system.ops.definition.step(step_id)
        outcome = asyncio.run(system.ops.run_step(task_id, step_id, 0, spec.retry_delay))
        assert outcome.ok, outcome.error
    return task_id


def _nothing(system: Any) -> str:
    return ""


#: The state each case's event expects.
PREPARE: dict[str, Callable[[Any], str]] = {
    "nothing": _nothing,
    "created": _created,
    "planned": _planned,
    "after two steps": _after_two_steps,
}
