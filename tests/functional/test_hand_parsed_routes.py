"""The routes whose arguments are read by hand (``agentic.api.hand_parsed``: create, execute, events)
answer exactly as the same endpoints do when FastAPI's own solver reads their signatures.

Two local apps, each on its own file: one as it is served, one whose hand-parsed routes are built
with FastAPI's ``APIRoute`` handler instead. The same requests go to both, in order; every answer
must agree (status, body with times masked, the headers clients read). Task ids come from
Idempotency-Keys, so both apps name the same tasks alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from agentic.api import checks as checks_module
from agentic.api.hand_parsed import HandParsedRoute
from agentic.local.wiring import create_local_app
from agentic.service.tasks import task_id_for
from tests.support import local_settings

pytestmark = pytest.mark.functional

TOKENS = "alice=tok-a,bob=tok-b"
ALICE = {"authorization": "Bearer tok-a"}
BOB = {"authorization": "Bearer tok-b"}
JSON = {"content-type": "application/json"}
HEADERS = ("location", "idempotent-replayed", "retry-after", "www-authenticate", "content-type")
DEEP = b'{"description": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
TIMES = re.compile(r'"(created_at|updated_at|timestamp|started_at|completed_at|finished_at)":"[^"]*"')
#: A task created without an Idempotency-Key gets a random id on each side.
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: {**ALICE, **JSON})
    params: dict[str, str] = field(default_factory=dict)


def task(key: str) -> str:
    return task_id_for("api", "alice", key)


def create(key: str, **body: Any) -> Req:
    content = json.dumps({"description": "Explain backoff", **body}).encode()
    return Req("POST", "/tasks", content, {**ALICE, **JSON, "idempotency-key": key})


def post_raw(body: bytes | None, headers: dict[str, str] | None = None) -> Req:
    return Req("POST", "/tasks", body, {**ALICE, **JSON} if headers is None else headers)


def stream(
    verb: str, task_id: str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> Req:
    method, suffix = ("POST", "execute") if verb == "execute" else ("GET", "events")
    return Req(method, f"/tasks/{task_id}/{suffix}", None, ALICE if headers is None else headers, params or {})


CASES: dict[str, list[Req]] = {
    "create": [create("k1")],
    "create and execute": [create("k1", execute=True)],
    "replayed key": [create("k1"), create("k1")],
    "key conflict": [
        create("k1"),
        Req("POST", "/tasks", b'{"description": "other"}', {**ALICE, **JSON, "idempotency-key": "k1"}),
    ],
    "bad JSON": [post_raw(b'{"description": ')],
    "not UTF-8": [post_raw(b'{"description": "\xff\xfe"}')],
    "deep JSON": [post_raw(DEEP)],
    "wrong content-type": [post_raw(b'{"description": "x"}', {**ALICE, "content-type": "text/plain"})],
    "no content-type": [post_raw(b'{"description": "x"}', ALICE)],
    "json+ suffix": [post_raw(b'{"description": "x"}', {**ALICE, "content-type": "application/vnd.x+json"})],
    "too large": [post_raw(json.dumps({"description": "x" * 70_000}).encode())],
    "no body": [post_raw(None)],
    "null body": [post_raw(b"null")],
    "array body": [post_raw(b"[1, 2]")],
    "missing field": [post_raw(b"{}")],
    "extra field": [post_raw(b'{"description": "x", "extra": 1}')],
    "blank description": [post_raw(b'{"description": "   "}')],
    "several bad fields": [post_raw(b'{"description": "", "execute": 1, "approval": "no"}')],
    "no token": [post_raw(b'{"description": "x"}', JSON)],
    "no token and bad JSON": [post_raw(b"{", JSON)],
    "no token and a bad body": [post_raw(b'{"execute": "yes"}', JSON)],
    "no token and not JSON": [post_raw(b"x", {"content-type": "text/plain"})],
    "wrong token and a bad body": [post_raw(b"{}", {"authorization": "Bearer nope", **JSON})],
    "execute": [create("k1"), stream("execute", task("k1"))],
    "execute unknown": [stream("execute", "0b7f2c1e-9d7a-4c55-8a8e-3f1d2b6c4a90")],
    "execute id too long": [stream("execute", "x" * 65)],
    "events id too long": [stream("events", "x" * 65)],
    "after negative": [create("k1"), stream("execute", task("k1"), params={"after": "-1"})],
    "after not a number": [create("k1"), stream("events", task("k1"), params={"after": "abc"})],
    "after empty": [create("k1"), stream("events", task("k1"), params={"after": ""})],
    "after too large": [create("k1"), stream("events", task("k1"), params={"after": str(10**12)})],
    "id too long and after bad": [stream("events", "x" * 65, params={"after": "-3"})],
    "Last-Event-ID bad": [create("k1"), stream("events", task("k1"), headers={**ALICE, "last-event-id": "abc"})],
    "after wins over Last-Event-ID": [
        create("k1", execute=True),
        stream("events", task("k1"), params={"after": "3"}, headers={**ALICE, "last-event-id": "abc"}),
    ],
    "resume by Last-Event-ID": [
        create("k1", execute=True),
        stream("events", task("k1"), headers={**ALICE, "last-event-id": "5"}),
    ],
    "no token on a stream": [stream("execute", task("k1"), headers={})],
    "no token and a bad stream parameter": [stream("events", "x" * 65, params={"after": "-1"}, headers={})],
    "another owner's task": [create("k1"), stream("execute", task("k1"), headers=BOB)],
}


@contextmanager
def both_apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, TestClient]]:
    """The app as served, and the same app whose hand-parsed routes FastAPI's own handler serves.

    FastAPI builds an included route's handler once per app, at the app's first request: the served
    app makes its first requests before the route class is switched to FastAPI's handler for the other.
    """
    hand_app = create_local_app(local_settings(tmp_path / "hand", api_tokens=TOKENS))
    with TestClient(hand_app) as hand:
        for req in (post_raw(b"{}", JSON), stream("events", "t", headers={})):
            assert answer(hand, req)[0] == 401  # (its handlers are built)
        monkeypatch.setattr(HandParsedRoute, "get_route_handler", APIRoute.get_route_handler)
        native_app = create_local_app(local_settings(tmp_path / "native", api_tokens=TOKENS))
        with TestClient(native_app) as native:
            yield hand, native


def answer(client: TestClient, req: Req) -> tuple[int, str, dict[str, str]]:
    response = client.request(req.method, req.path, content=req.body, headers=req.headers, params=req.params)
    body = UUID.sub("ID", TIMES.sub(r'"\1":"T"', response.text))
    return (
        response.status_code,
        body,
        {h: UUID.sub("ID", response.headers[h]) for h in HEADERS if h in response.headers},
    )


@pytest.mark.parametrize("case", list(CASES))
def test_hand_parsed_routes_answer_as_fastapis_solver(tmp_path, monkeypatch, case):
    # Given the app as served and the same app with FastAPI's solver on the same routes
    (tmp_path / "hand").mkdir()
    (tmp_path / "native").mkdir()
    made: list[int] = []
    with both_apps(tmp_path, monkeypatch) as (hand, native):
        monkeypatch.setattr(
            checks_module.Checks, "__init__", lambda self: (made.append(1), setattr(self, "errors", []))[0]
        )
        for req in CASES[case]:
            # When each is sent the same request
            before = len(made)
            theirs = answer(native, req)
            assert len(made) == before, "FastAPI's solver, not the hand reader, must answer for the native app"
            ours = answer(hand, req)
            # Then the answers agree
            assert ours == theirs, req
