"""Step outputs in the DynamoDB store: items of their own, written once, read back into tasks and events.

A step's output is the item ``pk = TASK#<task_id>, sk = OUT#<step_id>#<attempts>`` holding the text as
a raw string (``text``): a 3-byte character costs 3 bytes there, where JSON's escape costs 6. The
transaction that completes the step puts it (``output_put``); the task document leaves every output
out and names the item of its final output (``final_out``), and the events that carry an output (the
step's ``partial_output``, the ``task_completed``) keep a reference (``reference``) instead of a
second copy. ``OutputTexts`` puts the texts back when tasks and events are read; an output never
changes once written, so it keeps the ones it read.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, cast

from agentic.adapters.dynamodb_codec import parse_task, task_pk
from agentic.errors import RetryableStoreError
from agentic.models import LIST_PREVIEW_CHARS, EventType, NewEvent, StepStatus, TaskState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, KeysAndAttributesTypeDef, TransactWriteItemTypeDef

    Item = Mapping[str, AttributeValueTypeDef]

OUTPUT_PREFIX = "OUT#"
#: The stored task document leaves out step outputs (they are OUT# items; ExecutionStep.output is
#: never dumped) and, when an OUT# item holds it, the final output.
_WITHOUT_FINAL: Any = {"final_output": True}
#: Output texts a store keeps (they never change once written), in characters.
TEXT_CACHE_CHARS = 8_000_000
#: BatchGetItem reads at most 100 keys per call.
_BATCH_GET_MAX_KEYS = 100


#: The task item's ``fp``: the final output's first ``LIST_PREVIEW_CHARS + 1`` characters, deflated,
#: written with ``final_out``. A listing shows it instead of reading the OUT# item (which may be 350 KB
#: for a few characters shown); one character more than a listing shows, so that the listing knows
#: when the text was cut (``final_output_truncated``).
PREVIEW_ATTR = "fp"


def output_sk(step_id: str, attempts: int) -> str:
    return f"{OUTPUT_PREFIX}{step_id}#{attempts}"


def completed_outputs(task: TaskState) -> dict[str, str]:
    """The OUT# sk of each completed step of ``task`` -> its output (None-free)."""
    plan = task.execution_plan
    if plan is None:
        return {}
    return {
        output_sk(s.step_id, s.attempts): s.output
        for s in plan.steps
        if s.status is StepStatus.COMPLETED and s.output is not None
    }


def final_output_sk(task: TaskState, stored: Collection[str]) -> str | None:
    """The OUT# item holding the task's final output (the last completed step whose output it is)."""
    if task.final_output is None or task.execution_plan is None:
        return None
    for step in reversed(task.execution_plan.steps):
        sk = output_sk(step.step_id, step.attempts)
        if step.status is StepStatus.COMPLETED and step.output == task.final_output and sk in stored:
            return sk
    return None


def reference(
    event: NewEvent, task: TaskState, final_sk: str | None, stored: Collection[str]
) -> tuple[str, str] | None:
    """(field, OUT# sk) when ``event`` carries a text stored as an output item of ``task``.

    A step's ``partial_output`` with its whole output, and the ``task_completed`` with the final
    output: their data keep a reference instead of a second copy.
    """
    data = event.data
    if event.event_type is EventType.PARTIAL_OUTPUT and isinstance(data.get("output"), str):
        plan = task.execution_plan
        for step in plan.steps if plan is not None else []:
            if step.step_id == data.get("step_id") and step.status is StepStatus.COMPLETED:
                sk = output_sk(step.step_id, step.attempts)
                if step.output == data["output"] and sk in stored:
                    return "output", sk
    final = data.get("final_output")
    if event.event_type is EventType.TASK_COMPLETED and final_sk is not None and final == task.final_output:
        return "final_output", final_sk
    return None


def final_out(item: Item) -> str | None:
    value = item.get("final_out")
    return value["S"] if value is not None and "S" in value else None


def pack_preview(final_output: str) -> AttributeValueTypeDef:
    return {"B": zlib.compress(final_output[: LIST_PREVIEW_CHARS + 1].encode(), 9)}


def preview(item: Item) -> str | None:
    """The final output's preview a task item holds (None: none, or written before previews)."""
    value = item.get(PREVIEW_ATTR)
    return zlib.decompress(value["B"]).decode() if value is not None and "B" in value else None


def dump_task(task: TaskState, final_sk: str | None) -> str:
    """The stored document: no step outputs, no final output when an OUT# item holds it, no defaults."""
    return task.model_dump_json(exclude=None if final_sk is None else _WITHOUT_FINAL, exclude_defaults=True)


def output_put(table_name: str, task_id: str, sk: str, text: str, expires_at: str) -> TransactWriteItemTypeDef:
    return {
        "Put": {
            "TableName": table_name,
            "Item": {
                "pk": {"S": task_pk(task_id)},
                "sk": {"S": sk},
                "text": {"S": text},
                "expires_at": {"N": expires_at},
            },
        }
    }


def output_expiry(table_name: str, task_id: str, sk: str, expires_at: str) -> TransactWriteItemTypeDef:
    """Move an output item's expiry (TTL) to ``expires_at``."""
    return {
        "Update": {
            "TableName": table_name,
            "Key": {"pk": {"S": task_pk(task_id)}, "sk": {"S": sk}},
            "UpdateExpression": "SET #expires = :expires",
            "ExpressionAttributeNames": {"#expires": "expires_at"},
            "ExpressionAttributeValues": {":expires": {"N": expires_at}},
        }
    }


def instance_of(task: TaskState) -> str:
    """What tells a task apart from an earlier one of the same id: when it was created."""
    return task.created_at.isoformat()


class OutputTexts:
    """Reads output items (GetItem for one task's, BatchGetItem for a listing's) and keeps them."""

    def __init__(
        self,
        table_name: str,
        client: Callable[[], DynamoDBClient],
        *,
        attempts: int,
        pause: Callable[[int], None],
    ) -> None:
        self.table_name = table_name
        self._client = client
        self.attempts = attempts
        self.pause = pause
        # (task_id, instance, OUT# sk) -> text, least recently used first. The instance (the task's
        # creation time) tells a task apart from a later one of the same id (an idempotency key
        # used again once the first task expired), whose outputs have the same keys.
        self._texts: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._texts_chars = 0
        self._texts_lock = threading.Lock()

    def remember(self, task: TaskState, texts: Mapping[str, str]) -> None:
        """Keep ``task``'s output texts (by OUT# sk)."""
        instance = instance_of(task)
        with self._texts_lock:
            for sk, text in texts.items():
                key = (task.task_id, instance, sk)
                if key in self._texts:
                    self._texts.move_to_end(key)
                    continue
                self._texts[key] = text
                self._texts_chars += len(text)
            while self._texts_chars > TEXT_CACHE_CHARS and self._texts:
                _, dropped = self._texts.popitem(last=False)
                self._texts_chars -= len(dropped)

    def read(
        self,
        wanted: Collection[tuple[str, str]],
        *,
        batch: bool = False,
        tasks: Mapping[str, TaskState] | None = None,
    ) -> dict[tuple[str, str], str]:
        """The texts of the OUT# items ``(task_id, sk)`` that exist.

        Those of ``tasks`` (by id) come from the cache when it has them and are kept; others (an
        event log's references, whose task was not read) are read each time. One task's outputs (a
        few) are read with GetItem, which every function that reads a task holds; a listing's final
        outputs (``batch``) with BatchGetItem, as the listing's documents.
        """
        known = tasks or {}
        found: dict[tuple[str, str], str] = {}
        missing: list[tuple[str, str]] = []
        with self._texts_lock:
            for task_id, sk in dict.fromkeys(wanted):
                task = known.get(task_id)
                text = self._texts.get((task_id, instance_of(task), sk)) if task is not None else None
                if text is None:
                    missing.append((task_id, sk))
                else:
                    found[(task_id, sk)] = text
        if not batch:
            for task_id, sk in missing:
                item = (
                    self._client()
                    .get_item(
                        TableName=self.table_name,
                        Key={"pk": {"S": task_pk(task_id)}, "sk": {"S": sk}},
                        ConsistentRead=True,
                        ProjectionExpression="#text",
                        ExpressionAttributeNames={"#text": "text"},
                    )
                    .get("Item")
                )
                if item is not None and "text" in item:
                    found[(task_id, sk)] = item["text"]["S"]
                    if task_id in known:
                        self.remember(known[task_id], {sk: item["text"]["S"]})
            return found
        for start in range(0, len(missing), _BATCH_GET_MAX_KEYS):
            request: dict[str, KeysAndAttributesTypeDef] = {
                self.table_name: {
                    "Keys": [{"pk": {"S": task_pk(t)}, "sk": {"S": sk}} for t, sk in missing[start : start + 100]],
                    "ConsistentRead": True,
                    "ProjectionExpression": "pk, sk, #text",
                    "ExpressionAttributeNames": {"#text": "text"},
                }
            }
            for attempt in range(self.attempts):
                response = self._client().batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    task_id = item["pk"]["S"].removeprefix("TASK#")
                    found[(task_id, item["sk"]["S"])] = item["text"]["S"]
                    if task_id in known:
                        self.remember(known[task_id], {item["sk"]["S"]: item["text"]["S"]})
                unprocessed = response.get("UnprocessedKeys", {})
                if not unprocessed:
                    break
                request = cast("dict[str, KeysAndAttributesTypeDef]", unprocessed)  # throttled or over 16 MB
                self.pause(attempt)
            else:
                raise RetryableStoreError("DynamoDB kept some step outputs unread; try again")
        return found

    def fill(
        self, stored: list[tuple[TaskState, str | None]], *, outputs: bool = True
    ) -> list[tuple[TaskState, set[str]]]:
        """Tasks as read (document, final_out) with their texts put back, and the OUT# sks that exist.

        ``outputs=False`` puts back the final output only (a listing).
        """
        wanted: list[tuple[str, str]] = []
        for task, final_sk in stored:
            plan = task.execution_plan
            if outputs and plan is not None:
                wanted += [
                    (task.task_id, output_sk(s.step_id, s.attempts))
                    for s in plan.steps
                    if s.status is StepStatus.COMPLETED and s.output is None
                ]
            if final_sk is not None and task.final_output is None:
                wanted.append((task.task_id, final_sk))
        tasks = {task.task_id: task for task, _ in stored}
        texts = self.read(wanted, batch=not outputs, tasks=tasks) if wanted else {}
        filled: list[tuple[TaskState, set[str]]] = []
        for task, final_sk in stored:
            exist = {sk for (task_id, sk) in texts if task_id == task.task_id}
            changes: dict[str, Any] = {}
            plan = task.execution_plan
            if outputs and plan is not None and any(output_sk(s.step_id, s.attempts) in exist for s in plan.steps):
                steps = [
                    s.model_copy(update={"output": texts[(task.task_id, sk)]})
                    if s.status is StepStatus.COMPLETED
                    and s.output is None
                    and (sk := output_sk(s.step_id, s.attempts)) in exist
                    else s
                    for s in plan.steps
                ]
                changes["execution_plan"] = plan.model_copy(update={"steps": steps})
            if final_sk is not None and task.final_output is None:
                changes["final_output"] = texts.get((task.task_id, final_sk))
            filled.append((task.model_copy(update=changes) if changes else task, exist))
        return filled

    def inflate(self, item: Item) -> tuple[TaskState, set[str]]:
        """The task of a task item, whole, and the OUT# sks of it that exist."""
        return self.fill([(parse_task(item), final_out(item))])[0]
