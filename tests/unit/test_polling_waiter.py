"""DynamoDBPollingWaiter: the poll interval grows while nothing new arrives and resets when it does."""

from __future__ import annotations

import asyncio

import pytest

from agentic.adapters.dynamodb_waiter import DynamoDBPollingWaiter

pytestmark = pytest.mark.unit


@pytest.fixture
def slept(monkeypatch):
    """The delays the waiter asks asyncio.sleep for (nothing really sleeps)."""
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return delays


async def test_the_interval_grows_by_half_while_nothing_new_arrives_up_to_the_cap(slept):
    # Given a waiter polling between 20 ms and 200 ms
    waiter = DynamoDBPollingWaiter(min_interval=0.02, max_interval=0.2)
    # When a stream keeps finding nothing after cursor 5
    for _ in range(9):
        await waiter.wait("t-1", after=5, timeout=10)
    # Then each wait is 1.5x the last, capped at 200 ms
    assert slept == pytest.approx([0.02, 0.03, 0.045, 0.0675, 0.10125, 0.151875, 0.2, 0.2, 0.2])


async def test_the_interval_resets_when_the_cursor_advances(slept):
    # Given a waiter that has backed off on an idle task
    waiter = DynamoDBPollingWaiter(min_interval=0.02, max_interval=0.2)
    for _ in range(4):
        await waiter.wait("t-1", after=3, timeout=10)
    # When the stream read new events and waits after a later cursor
    await waiter.wait("t-1", after=7, timeout=10)
    await waiter.wait("t-1", after=7, timeout=10)
    # Then it polls quickly again, and backs off from there
    assert slept[-2:] == pytest.approx([0.02, 0.03])


async def test_the_wait_never_exceeds_the_timeout(slept):
    # Given a waiter already at its cap
    waiter = DynamoDBPollingWaiter(min_interval=0.1, max_interval=0.2)
    for _ in range(3):
        await waiter.wait("t-1", after=0, timeout=10)
    # When the stream has only 50 ms (or no time) left
    await waiter.wait("t-1", after=0, timeout=0.05)
    await waiter.wait("t-1", after=0, timeout=-1)
    # Then it sleeps no longer than that
    assert slept[-2:] == [0.05, 0.0]


async def test_tasks_back_off_independently(slept):
    # Given one idle task that has backed off
    waiter = DynamoDBPollingWaiter(min_interval=0.02, max_interval=0.2)
    for _ in range(5):
        await waiter.wait("idle", after=1, timeout=10)
    # When another task's stream waits for the first time
    await waiter.wait("busy", after=1, timeout=10)
    # Then it starts from the minimum
    assert slept[-1] == pytest.approx(0.02)


def test_nonsense_bounds_are_refused():
    # Given / When bounds that cannot work / Then the waiter refuses them
    with pytest.raises(ValueError, match="min_interval"):
        DynamoDBPollingWaiter(min_interval=0.3, max_interval=0.2)
    with pytest.raises(ValueError, match="min_interval"):
        DynamoDBPollingWaiter(min_interval=0, max_interval=0.2)
