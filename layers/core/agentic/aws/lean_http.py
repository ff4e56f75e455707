"""The buffered API on Lambda without a web framework (the template's ``ApiFront=lean``).

The default front (``http_handlers``) serves the core's FastAPI routers through Mangum, as the design
asks. This one answers API Gateway (HTTP API, payload 2.0) events with the same answers and no web
framework, for a shorter cold start. Each function serves only its routes (``http_routes``), so a
read-only function gets a read-only policy. The caller's IAM identity (the HTTP API's AWS_IAM
authorizer) is the task owner.

Why: importing FastAPI, Starlette and Mangum cost these functions about 1.6x ``import boto3`` of cold
start, for routing eight routes that API Gateway has already routed. Why not Powertools'
``APIGatewayHttpResolver``: it costs ~30 ms more of import (0.2x boto3), and every answer must stay the
FastAPI app's to the byte (tests/functional/aws/test_api_front_parity.py), in FastAPI's order of checks
(the body limit before routing, the JSON parse before the 415, then the caller, then one 422 for every
bad parameter), so each of its steps would have needed overriding. What remains is a table: the method
and the decoded path route as Starlette routed them behind Mangum (``{task_id}`` one segment), and the
response is what Mangum made of FastAPI's (lower-case headers, content-type and content-length, a text
body).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel

from agentic.api.answers import (
    Answer,
    error_answer,
    http_error_answer,
    internal_error_answer,
    too_large_message,
    unparsable_answer,
    validation_answer,
)
from agentic.api.checks import json_error, parse_body
from agentic.errors import AgenticError
from agentic.observability import logger
from agentic.service.tasks import TaskService

from .http_event import request_correlation_id, thread_event_loop
from .http_routes import HttpRequest, Route
from .powertools import LambdaEvent, LambdaHandler, instrumented
from .wiring import get_system


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")


class _Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = [(route, _pattern(route.path)) for route in routes]

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | Answer:
        """The route and its path parameters; else the 404, or the 405 (OPTIONS: 204) naming what the
        path accepts."""
        allowed = set()
        for route, pattern in self.routes:
            found = pattern.match(path)
            if found is None:
                continue
            if method == route.method:  # (FastAPI's routes serve no HEAD for their GET)
                return route, found.groupdict()
            allowed.add(route.method)
        if not allowed:
            return http_error_answer(404, "Not Found")
        allow = ", ".join(sorted(allowed | {"OPTIONS"}))
        if method == "OPTIONS":
            return Answer(204, None, {"Allow": allow})
        return http_error_answer(405, f"{method} is not allowed here; allowed: {allow}", {"Allow": allow})


def _body_bytes(event: LambdaEvent) -> bytes:
    body = event.get("body") or b""
    if event.get("isBase64Encoded", False):
        return base64.b64decode(body)
    return body if isinstance(body, bytes) else body.encode()


async def _answer(router: _Router, event: LambdaEvent, service: TaskService, max_bytes: int) -> Answer:
    http = event["requestContext"]["http"]
    # Values as Starlette decodes the bytes Mangum made of them (latin-1 of UTF-8): an Idempotency-Key
    # with non-ASCII characters keeps naming the task it named before.
    headers = {k.lower(): str(v).encode().decode("latin-1") for k, v in (event.get("headers") or {}).items()}
    length = headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > max_bytes:
        return http_error_answer(413, too_large_message(max_bytes))
    method = str(http["method"])
    matched = router.match(method, unquote(http["path"]) or "/")
    if isinstance(matched, Answer):
        return matched
    route, path_params = matched
    query = parse_qsl(str(event.get("rawQueryString") or "").encode().decode("latin-1"), keep_blank_values=True)
    request = HttpRequest(event, service, method, http["path"], headers, query, path_params=path_params)
    if route.reads_body:
        raw = _body_bytes(event)
        if len(raw) > max_bytes:
            return http_error_answer(413, too_large_message(max_bytes))
        try:
            request.body = parse_body(raw, headers.get("content-type"))
        except json.JSONDecodeError as exc:
            return validation_answer([json_error(exc)])
        except Exception as exc:  # not UTF-8, nested too deeply, ...: FastAPI's 400, this API's 422
            return unparsable_answer(exc)
    return await route.call(request)


def render(answer: Answer) -> dict[str, Any]:
    """The Lambda response Mangum made of FastAPI's: lower-case headers, JSON rendered as Starlette does."""
    if answer.body is None:
        body = ""
    elif isinstance(answer.body, BaseModel):  # a response model: pydantic's JSON, as FastAPI's dump_json
        body = answer.body.model_dump_json(by_alias=True)
    else:  # Starlette's JSONResponse
        body = json.dumps(answer.body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    headers = {name.lower(): value for name, value in answer.headers.items()}
    if answer.body is not None:
        headers["content-length"] = str(len(body.encode()))
    headers["content-type"] = "application/json"
    return {"statusCode": answer.status, "body": body, "headers": headers, "isBase64Encoded": False}


def http_handler(routes: Sequence[Route]) -> LambdaHandler:
    """A Lambda handler serving ``routes``; the system is built on the first request, not at import."""
    router = _Router(routes)

    async def answer(event: LambdaEvent) -> Answer:
        # A system that cannot be built fails the invocation, outside the API's answers (as before).
        system = get_system()
        try:
            return await _answer(router, event, system.service, system.settings.max_request_bytes)
        except AgenticError as exc:
            return error_answer(exc)
        except Exception:
            logger.exception("unhandled error")
            return internal_error_answer()

    def handle(event: LambdaEvent, context: Any) -> Any:
        return render(thread_event_loop().run_until_complete(answer(event)))

    return instrumented(handle, request_correlation_id)
