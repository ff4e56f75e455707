"""The DynamoDB store's write path: state changes and events, read-check-write on the task item.

How the contract of ``TaskStore`` holds here:

- A state change is an UpdateItem conditioned on the task existing, its status being one the
  caller expects and its ``version`` being the one read (optimistic concurrency: a concurrent write
  makes it read again and retry; a status that no longer matches raises ``InvalidTransition``).
  The item read may be the one this store last read or wrote (``ItemMemory``): the conditions make
  that safe, and a refusal is only ever decided on a fresh read.
- An event is written by the UpdateItem that moves the task item's ``event_seq`` from the value
  read to the event's cursor and puts the event in the item's inline log, its key (when it has
  one) added to ``ek`` by the same write. Cursors are therefore contiguous and strictly increasing,
  and cursor n is visible before n + 1 can be allocated, so a stream that has read up to n can
  never miss an event that commits later with a lower cursor. Events flushed out of the task item
  were committed before (``dynamodb_log``): their segment is put before the update that removes
  them, so a reader, which reads the task item first, always finds them.
- ``update`` writes the state change and its events in that same single-item write, as SQLite does
  in one transaction: a stream never sees an event before the state it announces, and a crash
  cannot keep one without the other.
- A keyed event past the 24 keys of ``ek`` needs its ``KEY#`` item written with it: only that write
  is a transaction (the task item's update and the ``KEY#`` put, conditioned on its absence), with
  a deterministic ``ClientRequestToken`` (``request_token``). Every other write sets a random ``w``
  on the task item: a writer whose answer was lost finds its ``w`` on the fresh read and knows its
  write landed.

"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentic.adapters.dynamodb_codec import (
    KEY_SET_MAX,
    gsi2pk,
    item_shard,
    key_digest,
    key_set,
    pack_doc,
    task_key,
)
from agentic.adapters.dynamodb_log import (
    LogWrite,
    PendingEvent,
    after_write,
    fit_write,
)
from agentic.adapters.dynamodb_outputs import (
    PREVIEW_ATTR,
    completed_outputs,
    dump_task,
    final_output_sk,
    output_expiry,
    output_put,
    pack_preview,
    reference,
)
from agentic.adapters.dynamodb_writes import (
    WRITE_ID_ATTR,
    new_write_id,
    retryable,
)

# Shared with the SQLite store: the payload bound (MAX_PAYLOAD_BYTES, 350 KB of a document or an event's
# data, leaving room in DynamoDB's 400 KB item for the other attributes).
from agentic.adapters.store_codec import check_payload_size
from agentic.errors import (
    InvalidTransition,
    TaskNotFound,
    WriteConflict,
)
from agentic.models import EventType, NewEvent, StreamEvent, TaskState, TaskStatus, utcnow
from agentic.ports import Mutation

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        TransactWriteItemTypeDef,
        UpdateTypeDef,
    )

    Item = Mapping[str, AttributeValueTypeDef]
from agentic.adapters.dynamodb_commit import MAX_ATTEMPTS, TaskItemCommits, _number, _pause, _seq_condition

#: Events one write carries at most: with a KEY# item each past the key set, a transaction stays
#: under TransactWriteItems' 100 items.
_WRITE_MAX_EVENTS = 90


@dataclass(frozen=True)
class _Tried:
    """The last write ``update`` sent: if a fresh read shows its write id, it landed."""

    write_id: str
    result: TaskState
    rest: builtins.list[PendingEvent]
    outputs: dict[str, str]

    def applied(self, item: Item) -> bool:
        return item.get(WRITE_ID_ATTR) == {"S": self.write_id}


def _keys_for_set(batch: Sequence[PendingEvent], known: set[bytes] | None) -> builtins.list[PendingEvent]:
    """The keyed events of ``batch`` whose keys go into the task item's key set (while it has room).

    Writing a key there costs nothing more (the task item is written with the events anyway) where a
    ``KEY#`` item makes the write a transaction (every item billed twice). Every write of the set
    also moves ``event_seq``, on which every event write is conditioned, so checking the set read
    before the write is exact.
    """
    if known is None:
        return []
    room = KEY_SET_MAX - len(known)
    chosen: builtins.list[PendingEvent] = []
    digests: set[bytes] = set()
    for pending in batch:
        key = pending.event.key
        if key is None or len(chosen) >= room:
            continue
        digest = key_digest(key)
        if digest not in digests:  # a key twice in one batch: the second one is a KEY# item, which fails
            digests.add(digest)
            chosen.append(pending)
    return chosen


class TaskItemWrites(TaskItemCommits):
    """``update`` and ``append_event``: read the task item, check, write conditionally, loop on a conflict."""

    @retryable
    def update(
        self,
        task_id: str,
        expect: Collection[TaskStatus],
        *,
        events: Sequence[NewEvent] = (),
        mutate: Mutation | None = None,
        **changes: Any,
    ) -> TaskState:
        expected = {TaskStatus(s) for s in expect}
        remaining = [e for e in events if e.task_id == task_id]
        elsewhere = [e for e in events if e.task_id != task_id]
        tried: _Tried | None = None
        rest: builtins.list[PendingEvent] = []
        for attempt in range(MAX_ATTEMPTS):
            # Read, check, write conditionally; a failed condition loops back here, where the
            # fresh read tells "gone", "moved to another state" and "changed concurrently" apart.
            remembered = self._memory.recall(task_id) if attempt == 0 else None
            item = remembered if remembered is not None else self._read_task_item(task_id)
            if item is None:
                raise TaskNotFound(task_id)
            if tried is not None and tried.applied(item):  # our write landed, its answer was lost
                updated, rest = tried.result, tried.rest
                self._outputs.remember(updated, tried.outputs)
                break
            task, stored = self._outputs.inflate(item)
            known = key_set(item)
            if known:  # events whose key the task item holds were written before: drop them
                remaining = [e for e in remaining if e.key is None or key_digest(e.key) not in known]
            if task.status not in expected:
                if remembered is not None:
                    continue  # a remembered item never refuses a write: read it afresh
                raise InvalidTransition.unexpected(task_id, task.status.value, (s.value for s in expected))
            try:
                applied = {**changes, **mutate(task)} if mutate is not None else changes
            except Exception:
                if remembered is not None:
                    continue
                raise
            updated = task.model_copy(update={**applied, "updated_at": utcnow()})
            # A step completed by this write: its output becomes an OUT# item, put before the write
            # that refers to it (an OUT# item no write refers to is harmless and expires).
            outputs = {sk: text for sk, text in completed_outputs(updated).items() if sk not in stored}
            for sk, text in outputs.items():
                check_payload_size(f"the output {sk} of task {task_id}", text)
            stored = stored | set(outputs)
            final_sk = final_output_sk(updated, stored)
            doc = dump_task(updated, final_sk)
            check_payload_size(f"task {task_id}", doc)
            packed = pack_doc(doc)
            expires = self._expires_at()
            pending = [PendingEvent.of(e, reference(e, updated, final_sk, stored)) for e in remaining]
            before: builtins.list[TransactWriteItemTypeDef] = [
                output_put(self.table_name, task_id, sk, text, expires) for sk, text in outputs.items()
            ]
            if task.status.is_terminal and not updated.status.is_terminal:
                # A retried task keeps the outputs of its completed steps, which the steps it runs
                # again read: they expire with the task from now on, not with the first run's log.
                kept = sorted(set(completed_outputs(updated)) - set(outputs))
                before += [output_expiry(self.table_name, task_id, sk, expires) for sk in kept]
            batch, rest = fit_write(pending, _WRITE_MAX_EVENTS)
            version = _number(item, "version")
            seq = _number(item, "event_seq")
            write_id = new_write_id()
            names = {
                "#doc": "doc",
                "#status": "status",
                "#version": "version",
                "#expires": "expires_at",
                "#gsi2pk": "gsi2pk",
                "#final_out": "final_out",
                "#preview": PREVIEW_ATTR,
                "#w": WRITE_ID_ATTR,
            }
            values: dict[str, AttributeValueTypeDef] = {
                ":doc": packed,
                ":status": {"S": TaskStatus(updated.status).value},
                ":next_version": {"N": str((version or 0) + 1)},
                ":expires": {"N": expires},
                # the status key moves within the shard the task was created in
                ":gsi2pk": {"S": gsi2pk(updated.owner, updated.status, item_shard(item, task_id, self._index.shards))},
                ":w": {"S": write_id},
                **{f":e{i}": {"S": s.value} for i, s in enumerate(sorted(expected))},
            }
            sets = (
                "SET #doc = :doc, #status = :status, #version = :next_version, #expires = :expires,"
                " #gsi2pk = :gsi2pk, #w = :w"
            )
            remove = ""
            if final_sk is None:
                remove = " REMOVE #final_out, #preview"
            else:
                sets += ", #final_out = :final_out, #preview = :preview"
                values[":final_out"] = {"S": final_sk}
                values[":preview"] = pack_preview(updated.final_output or "")
            condition = f"attribute_exists(pk) AND #status IN ({', '.join(f':e{i}' for i in range(len(expected)))})"
            if version is None:
                condition += " AND attribute_not_exists(#version)"
            else:
                condition += " AND #version = :version"
                values[":version"] = {"N": str(version)}
            in_set = _keys_for_set(batch, known)
            if in_set:
                names["#ek"] = "ek"
                values[":ek"] = {"BS": [key_digest(p.event.key) for p in in_set if p.event.key is not None]}
            log_write: LogWrite | None = None
            if batch:
                log_write = self._plan_append(task_id, item, batch, expires)
                sets += ", " + LogWrite.SET
                names.update(LogWrite.names())
                values.update(log_write.values())
                condition += " AND " + _seq_condition(seq, values)
            change: UpdateTypeDef = {
                "TableName": self.table_name,
                "Key": task_key(task_id),
                "UpdateExpression": sets + remove + (" ADD #ek :ek" if in_set else ""),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            after: dict[str, AttributeValueTypeDef] = {
                **item,
                "doc": packed,
                "status": values[":status"],
                "version": values[":next_version"],
                "expires_at": values[":expires"],
                "gsi2pk": values[":gsi2pk"],
                WRITE_ID_ATTR: values[":w"],
            }
            if final_sk is None:
                after.pop("final_out", None)
                after.pop(PREVIEW_ATTR, None)
            else:
                after["final_out"], after[PREVIEW_ATTR] = values[":final_out"], values[":preview"]
            if log_write is not None:
                after = after_write(after, log_write)
            if in_set:
                after["ek"] = {"BS": [*(known or ()), *values[":ek"]["BS"]]}
            tried = _Tried(write_id, updated, rest, outputs)
            committed, already = self._commit(task_id, change, batch, in_set, before, log_write)
            if committed:
                self._outputs.remember(updated, outputs)
                self._memory.keep(task_id, after)
                break
            if already:
                # Some keys were written before: drop those events and write at once.
                skipped = {id(p.event) for p in already}
                remaining = [e for e in remaining if id(e) not in skipped]
                continue
            if remembered is None:
                _pause(attempt)
        else:
            raise WriteConflict(f"task {task_id} kept changing while it was updated; try again")
        for leftover in rest:
            self._append(leftover.event, leftover)
        for event in elsewhere:
            self.append_event(event)
        return updated

    # --- events --------------------------------------------------------------------------------

    @retryable
    def append_event(self, event: NewEvent) -> StreamEvent | None:
        return self._append(event)

    def _pending_for(self, event: NewEvent, item: Item) -> PendingEvent:
        """An event written on its own; one that repeats a stored output refers to its OUT# item."""
        data = event.data
        carries_text = (event.event_type is EventType.PARTIAL_OUTPUT and isinstance(data.get("output"), str)) or (
            event.event_type is EventType.TASK_COMPLETED and isinstance(data.get("final_output"), str)
        )
        if carries_text:
            task, stored = self._outputs.inflate(item)
            return PendingEvent.of(event, reference(event, task, final_output_sk(task, stored), stored))
        return PendingEvent.of(event)

    def _append(self, event: NewEvent, pending: PendingEvent | None = None) -> StreamEvent | None:
        """One event on its own: one conditional UpdateItem of the task item (moving ``event_seq``)."""
        task_id = event.task_id
        tried: tuple[str, StreamEvent] | None = None
        for attempt in range(MAX_ATTEMPTS):
            remembered = self._memory.recall(task_id) if attempt == 0 else None
            item = remembered if remembered is not None else self._read_task_item(task_id)
            if item is None:
                raise TaskNotFound(task_id)
            if tried is not None and item.get(WRITE_ID_ATTR) == {"S": tried[0]}:
                return tried[1]  # our write landed, its answer was lost
            known = key_set(item)
            key = event.key
            if known and key is not None and key_digest(key) in known:
                return None  # this key was written before (keys are never removed): an idempotent replay
            if pending is None:
                pending = self._pending_for(event, item)
            in_set = _keys_for_set([pending], known)
            seq = _number(item, "event_seq")
            expires = self._expires_at()
            log_write = self._plan_append(task_id, item, [pending], expires)
            write_id = new_write_id()
            names = {**LogWrite.names(), "#w": WRITE_ID_ATTR}
            values: dict[str, AttributeValueTypeDef] = {**log_write.values(), ":w": {"S": write_id}}
            update = f"SET {LogWrite.SET}, #w = :w"
            if in_set and key is not None:
                update += " ADD #ek :ek"
                names["#ek"] = "ek"
                values[":ek"] = {"BS": [key_digest(key)]}
            counter: UpdateTypeDef = {
                "TableName": self.table_name,
                "Key": task_key(task_id),
                "UpdateExpression": update,
                "ConditionExpression": "attribute_exists(pk) AND " + _seq_condition(seq, values),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            written = pending.written(log_write.next_seq)
            tried = (write_id, written)
            committed, already = self._commit(task_id, counter, [pending], in_set, (), log_write)
            if committed:
                after = {**after_write(item, log_write), WRITE_ID_ATTR: values[":w"]}
                if in_set:
                    after["ek"] = {"BS": [*(known or ()), *values[":ek"]["BS"]]}
                self._memory.keep(task_id, after)
                return written
            if already:
                return None  # this key was written before: an idempotent replay
            if remembered is None:
                _pause(attempt)
        raise WriteConflict(f"task {task_id} kept changing while an event was appended; try again")
