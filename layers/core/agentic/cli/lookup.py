"""Finding tasks from the command line: short id prefixes, and a list filtered by text and date.

The API lists a caller's tasks newest first, a page at a time, filtered by status only; the rest is
done here, over those pages: a prefix is looked up among the caller's tasks (as git resolves a
short commit id), and a search reads pages until it has found enough or reached the given date.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from agentic.cli.client import AgenticClient

#: A full task id: a UUID.
FULL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: What a prefix of one may be (hex digits and dashes), at least this long.
PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]*$")
MIN_PREFIX = 4
PAGE = 100


class AmbiguousId(Exception):
    """More than one task starts with the prefix."""

    def __init__(self, prefix: str, candidates: list[dict[str, Any]]) -> None:
        self.prefix = prefix
        self.candidates = candidates
        super().__init__(f"{prefix} is the start of {len(candidates)} task ids")


def pages(
    client: AgenticClient, *, status: str | None = None, cursor: str | None = None
) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
    """The caller's tasks, newest first, page by page, with each page's next cursor."""
    while True:
        page = client.list(status=status, limit=PAGE, cursor=cursor)
        cursor = page.get("next_cursor")
        yield page["items"], cursor
        if not cursor:
            return


def resolve(client: AgenticClient, task_id: str) -> str:
    """The full id of the one task whose id starts with ``task_id`` (a prefix of 4 or more characters).

    A full id, or a text that cannot be a prefix, is returned as typed (the server then answers for
    it, e.g. 404); a prefix no task has is too. Several tasks with the prefix: ``AmbiguousId``.
    """
    wanted = task_id.strip().lower()
    if FULL_ID.match(wanted) or len(wanted) < MIN_PREFIX or not PREFIX.match(wanted):
        return task_id
    found = [task for items, _ in pages(client) for task in items if task["task_id"].startswith(wanted)]
    if len(found) > 1:
        raise AmbiguousId(task_id, found)
    return found[0]["task_id"] if found else task_id


def parse_when(text: str, *, end_of_day: bool = False) -> datetime:
    """A date (``2026-12-04``, the whole day) or a time (``2026-12-04T10:30``, UTC unless it says)."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass
class Search:
    """What ``agentic list`` looks for: text in the description, and a creation date range."""

    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    words: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.words = (self.text or "").lower().split()

    @property
    def filters(self) -> bool:
        return bool(self.words) or self.since is not None or self.until is not None

    def matches(self, task: dict[str, Any]) -> bool:
        created = created_at(task)
        if self.since is not None and created < self.since:
            return False
        if self.until is not None and created > self.until:
            return False
        haystack = f"{task['task_id']} {task['user_input']}".lower()
        return all(word in haystack for word in self.words)

    def past_range(self, task: dict[str, Any]) -> bool:
        """Newest first: once a task is older than ``since``, every later one is too."""
        return self.since is not None and created_at(task) < self.since


def created_at(task: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(task["created_at"]).replace("Z", "+00:00"))


def search(
    client: AgenticClient, query: Search, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` matching tasks from ``cursor`` on, and the cursor to go on from (None: no more).

    Without filters this is one page of the API. With them, pages are read until ``limit`` tasks
    match, the tasks get older than ``since``, or there are none left; the cursor returned is the one
    after the last page read, so a match on that page past ``limit`` is not lost: the page is read
    with a ``limit`` of what is still needed.
    """
    if not query.filters:
        page = client.list(status=status, limit=limit, cursor=cursor)
        return page["items"], page.get("next_cursor")
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        page = client.list(status=status, limit=limit - len(found), cursor=cursor)
        items = page["items"]
        cursor = page.get("next_cursor")
        for task in items:
            if query.past_range(task):
                return found, None
            if query.matches(task):
                found.append(task)
        if not cursor:
            return found, None
    return found, cursor
