"""The shard of a task's index keys (issue 16): a stable function of the task id, and key values
that leave shard 0 exactly as every key was written before sharding."""

from __future__ import annotations

from collections import Counter

import pytest

from agentic.adapters.dynamodb_codec import gsi1pk, gsi2pk, index_shard, item_shard, key_shard
from agentic.models import TaskStatus

pytestmark = pytest.mark.unit

OWNER = "arn:aws:iam::123456789012:role/agentic-TriggeredTasksRole-X1"


@pytest.mark.parametrize(
    ("task_id", "of_8", "of_32"),
    [
        ("t-1", 2, 2),
        ("a7f9c1de-0b6d-4c55-9a7e-1d2f3a4b5c01", 6, 22),
        ("task-00042", 1, 1),
        ("sqs-order-1001", 5, 13),
    ],
)
def test_a_task_ids_shard_never_changes(task_id, of_8, of_32):
    # Given a task id / Then its shard is the same in every process, function and version (the
    # values are pinned: a per-process hash such as hash() or a changed digest moves them)
    assert index_shard(task_id, 8) == of_8
    assert index_shard(task_id, 32) == of_32
    assert index_shard(task_id, 1) == 0


def test_task_ids_spread_evenly_over_the_shards():
    # Given 8,000 uuid-like task ids / When each is given one of 8 shards
    counts = Counter(index_shard(f"{n:08x}-6f1e-5d2c-9b3a-{n * 7919:012x}", 8) for n in range(8000))
    # Then every shard takes its share, within 10 %
    assert set(counts) == set(range(8))
    assert all(900 <= count <= 1100 for count in counts.values()), counts


def test_shard_zero_is_the_key_written_before_sharding():
    # Items written before the keys were sharded are shard 0's: listing it lists them
    assert gsi1pk("alice") == gsi1pk("alice", 0) == "OWNER#alice"
    assert gsi2pk("alice", TaskStatus.PENDING, 0) == "OWNER#alice#STATUS#pending"
    assert gsi1pk("alice", 3) == "S3#OWNER#alice"
    assert gsi2pk("alice", TaskStatus.COMPLETED, 3) == "S3#OWNER#alice#STATUS#completed"


@pytest.mark.parametrize("owner", [OWNER, "S1", "S2#OWNER#x", "alice"])
def test_a_keys_shard_reads_back_whatever_the_owner_is_called(owner):
    for shard in range(32):
        assert key_shard(gsi1pk(owner, shard)) == shard
        assert key_shard(gsi2pk(owner, TaskStatus.EXECUTING, shard)) == shard
    # no two shards of two owners share a key
    keys = {gsi1pk(o, k) for o in (owner, "S1", "alice") for k in range(8)}
    assert len(keys) == len({owner, "S1", "alice"}) * 8


def test_an_item_keeps_the_shard_it_was_created_in():
    # Given an item created in shard 5 (say, with 8 shards) / When it is updated under another setting
    # Then its status key moves within shard 5, beside its owner key
    item = {"gsi1pk": {"S": gsi1pk(OWNER, 5)}}
    assert item_shard(item, "t-1", 16) == 5
    # an item written before sharding stays in shard 0; one without index keys takes the id's shard
    assert item_shard({"gsi1pk": {"S": gsi1pk(OWNER)}}, "t-1", 8) == 0
    assert item_shard({}, "t-1", 8) == index_shard("t-1", 8) == 2
