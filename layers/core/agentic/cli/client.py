"""The HTTP client behind the ``agentic`` command: one small class over the public API.

It knows the routes and their error bodies, nothing of the server's code. Two base URLs: the API
(create, list, status, task controls) and the stream (execute, events); locally both are the same
server, on AWS they are the stack's ``ApiUrl`` (API Gateway, SigV4 service ``execute-api``) and
``StreamUrl`` (a Lambda Function URL, SigV4 service ``lambda``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

#: The task controls of the task-control API (cancel, human approval, retry from the failed step).
ACTIONS = ("cancel", "approve", "reject", "retry")
#: How often a control is sent in all when its connection drops, and the pause before a repeat.
CONTROL_ATTEMPTS = 3
CONTROL_REPEAT_DELAY_SECONDS = 0.2
#: A stream sends a keepalive line after 15 s of silence; a minute without a byte is a dead connection.
STREAM_READ_TIMEOUT = 60.0


class ApiError(Exception):
    """The server answered with an error (its ``{"error", "message"}`` body)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            body = json.loads(response.read())
        except ValueError:
            body = None
        if isinstance(body, dict) and "error" in body:
            code, message = str(body["error"]), str(body.get("message", ""))
        elif isinstance(body, dict) and "message" in body:  # API Gateway's own errors: {"message": "Forbidden"}
            code, message = "http_error", str(body["message"])
        else:
            code, message = "http_error", response.text[:200] or response.reason_phrase
        retry_after = response.headers.get("retry-after")
        return cls(
            response.status_code, code, message, float(retry_after) if retry_after and retry_after.isdigit() else None
        )

    @property
    def retryable(self) -> bool:
        return self.status in (429, 502, 503, 504)


class Unsupported(ApiError):
    """The server has no such route (yet): a 404 without a task error, or a 405."""

    def __init__(self, what: str, status: int) -> None:
        super().__init__(status, "unsupported", f"this server does not support {what} yet")


def _is_missing_route(error: ApiError) -> bool:
    # A missing route is a 405, or a 404 that is not about the task ("task_not_found").
    return error.status == 405 or (error.status == 404 and error.code in ("not_found", "http_error"))


class AgenticClient:
    def __init__(
        self,
        api_url: str,
        stream_url: str | None = None,
        *,
        token: str | None = None,
        api_auth: httpx.Auth | None = None,
        stream_auth: httpx.Auth | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers["User-Agent"] = "agentic-cli"
        self.api_url = api_url.rstrip("/")
        self.stream_url = (stream_url or api_url).rstrip("/")
        self._api = httpx.Client(
            base_url=self.api_url, headers=headers, auth=api_auth, timeout=timeout, transport=transport
        )
        self._stream = httpx.Client(
            base_url=self.stream_url,
            headers=headers,
            auth=stream_auth,
            timeout=httpx.Timeout(timeout, read=STREAM_READ_TIMEOUT),
            transport=transport,
        )

    def close(self) -> None:
        self._api.close()
        self._stream.close()

    def __enter__(self) -> AgenticClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._api.request(method, path, **kwargs)
        if response.is_error:
            raise ApiError.of(response)
        return response.json()

    # --- tasks ------------------------------------------------------------------------------

    def create(
        self,
        description: str,
        *,
        execute: bool = False,
        approval: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"description": description, "execute": execute}
        if approval:
            body["approval"] = True
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            task: dict[str, Any] = self._call("POST", "/tasks", json=body, headers=headers)
        except ApiError as exc:
            if approval and exc.status == 422 and "approval" in exc.message:
                raise Unsupported("approval", exc.status) from None
            raise
        return task

    def list(self, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        page: dict[str, Any] = self._call("GET", "/tasks", params=params)
        return page

    # --- knowledge base ----------------------------------------------------------------------

    def knowledge(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/knowledge")
        return result

    def search_knowledge(self, query: str, k: int = 3) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/knowledge/search", params={"q": query, "k": k})
        return result

    def status(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._call("GET", f"/tasks/{task_id}/status")
        return task

    def control(self, task_id: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /tasks/{id}/{cancel|approve|reject|retry}``; ``Unsupported`` where the server lacks it.

        A dropped connection does not say whether the control committed (a server killed just after
        its commit drops it too), so the control is sent again: controls are safe to repeat. A retry
        is repeated only if the task's retry count shows the first one did not land.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        retries_before = self.status(task_id).get("retries", 0) if action == "retry" else None
        dropped: httpx.TransportError | None = None
        for attempt in range(CONTROL_ATTEMPTS):
            if dropped is not None:
                time.sleep(CONTROL_REPEAT_DELAY_SECONDS * attempt)
                if retries_before is not None:
                    try:
                        current = self.status(task_id)
                    except httpx.TransportError as exc:
                        dropped = exc
                        continue
                    if current.get("retries", 0) > retries_before:
                        return current  # the retry whose answer was lost had committed
            try:
                task: dict[str, Any] = self._call("POST", f"/tasks/{task_id}/{action}", json=body or {})
            except httpx.TransportError as exc:
                dropped = exc
                continue
            except ApiError as exc:
                if _is_missing_route(exc):
                    raise Unsupported(action, exc.status) from None
                raise
            return task
        assert dropped is not None
        raise dropped

    # --- streams ------------------------------------------------------------------------------

    @contextmanager
    def events(self, task_id: str, *, execute: bool = False, after: int = 0) -> Iterator[Iterator[dict[str, Any]]]:
        """The task's stream after ``after``: ``POST .../execute`` (starts a pending task) or ``GET .../events``.

        Yields the parsed lines as they arrive, control lines (no ``cursor``) included. Raises
        ``ApiError`` for an error answer and ``httpx.TransportError`` when the connection drops.
        """
        method, path = ("POST", "execute") if execute else ("GET", "events")
        headers = {"Last-Event-ID": str(after)} if after else {}
        with self._stream.stream(method, f"/tasks/{task_id}/{path}", headers=headers) as response:
            if response.is_error:
                raise ApiError.of(response)
            yield (json.loads(line) for line in response.iter_lines() if line.strip())
