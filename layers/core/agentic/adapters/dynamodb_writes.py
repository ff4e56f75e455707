"""The DynamoDB store's conditional writes: how their failures are told apart, retried and made idempotent.

- ``conflict_codes``: the one place a failed condition or a cancelled transaction is recognised.
- ``retryable``: throttling, internal errors and lost connections leave the store as
  ``RetryableStoreError`` (nothing was applied: the caller may retry).
- ``request_token``: a transaction's deterministic ``ClientRequestToken``.
- ``ItemMemory``: the task items a store last read or wrote, which its conditional writes may start
  from instead of reading again.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from agentic.errors import RetryableStoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

    Item = Mapping[str, AttributeValueTypeDef]

#: How long ``update`` trusts the task item this store last read or wrote, instead of reading it
#: again (see ``ItemMemory``), and how many it keeps.
REMEMBER_SECONDS = 60.0
REMEMBER_ITEMS = 256
#: Per-item reason codes of a cancelled transaction that mean "a condition or a concurrent write".
CONFLICT_CODES = frozenset({"None", "ConditionalCheckFailed", "TransactionConflict"})
#: Errors (after the SDK's own retries) that applied nothing and are safe to retry later: they leave
#: the store as ``RetryableStoreError``, the one name the state machine's Retry clauses list.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)
#: The task item's ``w``: a random id each write sets, so that a writer whose answer was lost (the
#: SDK's retry then fails the condition the first call changed) can tell, on a fresh read, that its
#: write landed. A transaction has its ``ClientRequestToken`` for that; an UpdateItem has nothing.
WRITE_ID_ATTR = "w"
#: Namespace of the transactions' ClientRequestToken (see ``request_token``).
_TOKEN_NAMESPACE = uuid.UUID("8f9a7d0e-3b1c-4c55-a2f4-1e6b0c9d7a21")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def conflict_codes(exc: ClientError) -> list[str] | None:
    """The one place DynamoDB's write conflicts are recognised.

    For a failed condition or a cancelled transaction: the reason code of each item, in request
    order (``ConditionalCheckFailed``, ``TransactionConflict``, or ``None`` for an item that was
    fine). For any other error: None, and the caller re-raises it.
    """
    code = exc.response.get("Error", {}).get("Code")
    if code == "ConditionalCheckFailedException":
        return ["ConditionalCheckFailed"]
    if code == "TransactionConflictException":
        return ["TransactionConflict"]
    if code == "TransactionCanceledException":
        codes = [reason.get("Code") or "None" for reason in exc.response.get("CancellationReasons", [])]
        if codes and all(c in CONFLICT_CODES for c in codes):
            return codes
    return None


def retryable(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn throttling, internal errors and lost connections into ``RetryableStoreError``."""

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in RETRYABLE_CODES:
                raise RetryableStoreError(f"DynamoDB refused the call for now ({code}); try again") from exc
            raise
        except (ConnectionError, HTTPClientError) as exc:
            raise RetryableStoreError(f"DynamoDB could not be reached ({type(exc).__name__}); try again") from exc

    return call


def new_write_id() -> str:
    return uuid.uuid4().hex[:16]


def _wire(value: object) -> str:
    """A value as the request carries it in JSON: binaries in base64."""
    return base64.b64encode(value).decode() if isinstance(value, bytes | bytearray) else str(value)


def request_token(task_id: str, items: object) -> str:
    """A transaction's ClientRequestToken: the same for the same write, different for any other.

    Derived from the task, and the whole request, which holds the task's version and event
    sequence it was conditioned on. When a transaction commits but its response is lost, the SDK's
    retry sends the same token and DynamoDB answers success instead of failing the conditions the
    first call already changed (tokens are honoured for 10 minutes). Any other write, even of the same
    task version, has another token, so it never meets ``IdempotentParameterMismatch``.
    """
    digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=_wire).encode()).hexdigest()
    return str(uuid.uuid5(_TOKEN_NAMESPACE, f"{task_id}\x1f{digest}"))


class ItemMemory:
    """The task items this store last read or wrote, so that ``update`` can skip its read.

    A step's Lambda reads the task, then writes it twice (the step started, then completed): each
    ``update`` would read the item again, 1 RRU. Every write is conditioned on the ``version`` (and
    ``event_seq``) it was computed from, so writing from a remembered item is safe: if another writer
    changed the task meanwhile, the condition fails and ``update`` reads it afresh, as it would after
    any concurrent write. A remembered item is also never trusted to refuse a write: a status or a
    ``mutate`` that rejects it is checked again on a fresh read.
    """

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[float, Item]] = OrderedDict()
        self._lock = threading.Lock()

    def recall(self, task_id: str) -> Item | None:
        with self._lock:
            found = self._items.pop(task_id, None)
            if found is None or time.monotonic() - found[0] > REMEMBER_SECONDS:
                return None
            self._items[task_id] = found
            return found[1]

    def keep(self, task_id: str, item: Item) -> None:
        with self._lock:
            self._items.pop(task_id, None)
            self._items[task_id] = (time.monotonic(), item)
            while len(self._items) > REMEMBER_ITEMS:
                self._items.popitem(last=False)

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._items.pop(task_id, None)
