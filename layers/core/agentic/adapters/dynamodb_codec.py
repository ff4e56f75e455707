"""How the DynamoDB store spells its keys and packs the task document.

The task item is written on every state change and every event (its ``event_seq`` moves), and
DynamoDB bills a write by the whole item, 1 WRU per started KB: so the document is stored as
deflated JSON (``doc``, Binary) that leaves out default values, which keeps a task of the seed's
three steps near 600 bytes and its item under 1 KB. A document written as a JSON string (``S``, by
an earlier version) is still read.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agentic.models import TaskState, TaskStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

    Item = Mapping[str, AttributeValueTypeDef]

TASK_SK = "TASK"
EVENT_PREFIX = "EVT#"
KEY_PREFIX = "KEY#"
CURSOR_DIGITS = 12
MAX_CURSOR = 10**CURSOR_DIGITS - 1
#: Sort keys are limited to 1024 bytes; longer event keys are stored as their SHA-256.
_MAX_KEY_BYTES = 512
#: zlib's level: the documents are small, so the best ratio costs microseconds.
_LEVEL = 9


def task_pk(task_id: str) -> str:
    """The partition of a task: its item, its events, its keys and its outputs."""
    return f"TASK#{task_id}"


def task_key(task_id: str) -> dict[str, AttributeValueTypeDef]:
    return {"pk": {"S": task_pk(task_id)}, "sk": {"S": TASK_SK}}


def event_sk(cursor: int) -> str:
    return f"{EVENT_PREFIX}{cursor:0{CURSOR_DIGITS}d}"


def key_sk(key: str) -> str:
    if len(key.encode()) > _MAX_KEY_BYTES:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return KEY_PREFIX + key


def gsi1sk(created_at: str, task_id: str) -> str:
    return f"{created_at}#{task_id}"


# An owner's index keys are spread over ``shards`` partitions (``INDEX_SHARDS``), so one owner's
# writes (every triggered task has the same owner) are not capped by one index partition. Shard 0 is
# the plain key, the only one written before sharding, so those items are shard 0's and are listed
# with no migration; shard k > 0 prefixes the key with ``S<k>#`` (no owner key starts with "S").


def gsi1pk(owner: str, shard: int = 0) -> str:
    return _in_shard(f"OWNER#{owner}", shard)


def gsi2pk(owner: str, status: TaskStatus, shard: int = 0) -> str:
    return _in_shard(f"OWNER#{owner}#STATUS#{TaskStatus(status).value}", shard)


def _in_shard(key: str, shard: int) -> str:
    return key if shard == 0 else f"S{shard}#{key}"


def index_shard(task_id: str, shards: int) -> int:
    """The shard of a task's index keys among ``shards``: a function of the task id alone.

    SHA-256, not ``hash()``, which Python salts per process: every function and every version puts
    a task in the same shard.
    """
    if shards <= 1:
        return 0
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big") % shards


def key_shard(key: str) -> int:
    """The shard of an index key (``gsi1pk`` or ``gsi2pk``) as written: 0 for a plain key."""
    head, sep, _ = key.partition("#")
    if sep and head[:1] == "S" and head[1:].isdigit():
        return int(head[1:])
    return 0


def item_shard(item: Item, task_id: str, shards: int) -> int:
    """The shard a task item's index keys live in: where ``create`` put its ``gsi1pk``.

    An update moves ``gsi2pk`` within that shard, so a task's keys stay together even if
    ``INDEX_SHARDS`` changed since it was created; an item without one falls back to the id's shard.
    """
    value = item.get("gsi1pk")
    if value is not None and "S" in value:
        return key_shard(value["S"])
    return index_shard(task_id, shards)


def pack_doc(doc: str) -> AttributeValueTypeDef:
    """The ``doc`` attribute of a document (JSON, as ``dump_task`` writes it)."""
    return {"B": zlib.compress(doc.encode(), _LEVEL)}


def has_doc(item: Item | None) -> bool:
    return bool(item) and "doc" in item  # type: ignore[operator]


def parse_task(item: Item) -> TaskState:
    value = item["doc"]
    if "B" in value:
        return TaskState.model_validate_json(zlib.decompress(value["B"]))
    return TaskState.model_validate_json(value["S"])


#: The task item's set of written event keys (``ek``, Binary Set of ``KEY_DIGEST_BYTES``-byte
#: digests) holds at most this many: a key past them is a ``KEY#`` item, so the item stays bounded.
KEY_SET_MAX = 24
#: 64 bits: two of a task's keys collide with odds near n² / 2^65 (1e-13 for a thousand keys).
KEY_DIGEST_BYTES = 8
#: ``kv = 1`` marks a task created with the key set; an older task keeps all its keys as KEY# items.
KEY_SET_MARK = "kv"


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()[:KEY_DIGEST_BYTES]


def key_set(item: Item) -> set[bytes] | None:
    """The digests of the keys the task item holds, or None when it keeps none (an older task)."""
    if KEY_SET_MARK not in item:
        return None
    value = item.get("ek")
    return {bytes(d) for d in value["BS"]} if value is not None and "BS" in value else set()
