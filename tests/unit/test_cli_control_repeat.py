"""The CLI sends a control again when its connection drops: the server may have committed it."""

from __future__ import annotations

import httpx
import pytest

from agentic.cli.client import AgenticClient

pytestmark = pytest.mark.unit


class Server:
    """Commits each control, but drops the connection of the first one after committing it."""

    def __init__(self) -> None:
        self.task = {"task_id": "t", "status": "failed", "retries": 0}
        self.controls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=self.task)
        action = request.url.path.rsplit("/", 1)[1]
        self.controls.append(action)
        if action == "retry":
            self.task = {**self.task, "status": "executing", "retries": self.task["retries"] + 1}
        else:
            self.task = {**self.task, "status": "cancelled"}
        if len(self.controls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json=self.task)


def client_of(server: Server) -> AgenticClient:
    return AgenticClient("http://agentic.test", transport=httpx.MockTransport(server))


def test_a_control_whose_connection_dropped_after_the_commit_is_sent_again():
    # Given a server that commits a cancel but drops the connection before answering
    server = Server()
    # When the CLI cancels the task
    task = client_of(server).control("t", "cancel", {"reason": "no longer needed"})
    # Then it sent the cancel again (a repeat is harmless) and reports the task as cancelled
    assert server.controls == ["cancel", "cancel"]
    assert task["status"] == "cancelled"


def test_a_retry_whose_answer_was_lost_is_not_sent_twice_when_it_committed():
    # Given a server that commits a retry but drops the connection before answering
    server = Server()
    # When the CLI retries the task
    task = client_of(server).control("t", "retry")
    # Then it saw from the task's retry count that the retry landed, and did not retry it again
    assert server.controls == ["retry"]
    assert task["retries"] == 1
