"""Fixtures for the functional tier: the task store, once per implementation.

``store`` runs a test on the embedded SQLite store and on the DynamoDB store over moto, so one
contract suite holds both to the same behaviour. tests/conftest.py has already set fake AWS
credentials and a region: nothing here can reach a real account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from agentic.adapters.dynamodb_store import DynamoDBTaskStore, create_table
from agentic.adapters.sqlite_store import SQLiteTaskStore
from tests.functional.test_leases import Clock, Process

TABLE_NAME = "agentic-tasks-test"


@pytest.fixture
def dynamodb_store() -> Iterator[DynamoDBTaskStore]:
    """A DynamoDB store on a fresh moto table with the production schema."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, TABLE_NAME)
        yield DynamoDBTaskStore(TABLE_NAME, client)


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[SQLiteTaskStore]:
    store = SQLiteTaskStore(tmp_path / "tasks.db")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request):
    """Each TaskStore implementation in turn."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def local_system(tmp_path):
    """The local wiring (SQLite file, in-process runner) with no agent latency."""
    from agentic.local.wiring import build_local_system
    from tests.support import local_settings

    system = build_local_system(local_settings(tmp_path))
    yield system
    system.store.close()


@pytest.fixture
def shared(tmp_path):
    """Processes (stores, runners, executors) sharing one SQLite file and one virtual clock."""
    clock, calls = Clock(), []
    made: list[Process] = []

    def process(name: str, held: dict[str, asyncio.Event] | None = None) -> Process:
        made.append(Process(tmp_path / "tasks.db", clock, calls, name, held))
        return made[-1]

    yield clock, calls, process
    for p in made:
        p.store.close()
