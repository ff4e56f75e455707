"""The knowledge base on AWS: the indexer handler and the retriever's index object, against moto S3.

Objects under knowledge/ are indexed into one SQLite object (knowledge-index/index.sqlite) by the
real handler; the retriever's S3Knowledge loads it by ETag. Two indexers at once both land (the
conditional put on the ETag), and the same folder gives the same passages on both wirings.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from agentic.adapters.s3_knowledge import S3Knowledge, S3KnowledgeIndexer, S3Objects
from agentic.agents.passages import parse_passages
from agentic.agents.retriever import retrieve
from agentic.aws.knowledge_handlers import build_indexer, handle_knowledge_event, reset_indexer
from agentic.aws.wiring import build_aws_system
from agentic.knowledge.folder import FolderKnowledge
from agentic.knowledge.index import PassageIndex
from agentic.settings import Settings
from agentic.triggers import start_task_from_s3_object
from tests.functional.aws.support import EVENTS, REGION, invoke, load_event

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

BUCKET = "agentic-dev-tasks-123456789012-5e7d2a10"
INDEX_KEY = "knowledge-index/index.sqlite"
DOCS = {
    "runbooks/deploy.md": "# Deploy\n\nShip with sam deploy once the canary passes.\n\n"
    "## Rollback\n\nTo roll back a bad deploy, point the live alias at the previous version.\n",
    "oncall.html": "<h1>On-call</h1><p>Page the database owner when replication lag exceeds a minute.</p>",
    "notes/budget.txt": "Quarterly budget review: hiring plans and cloud spend.",
    "notes/security.md": "# Keys\n\nRotate the signing keys every ninety days.",
}


def notification(*records: tuple[str, str]) -> dict[str, Any]:
    """An SQS batch with one S3 notification per (event name, key), keys URL-encoded as S3 sends them."""
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "body": json.dumps(
                    {
                        "Records": [
                            {
                                "eventName": name,
                                "s3": {"bucket": {"name": BUCKET}, "object": {"key": key.replace(" ", "+")}},
                            }
                        ]
                    }
                ),
            }
            for i, (name, key) in enumerate(records)
        ]
    }


class Bucket:
    def __init__(self, client: Any, tmp: Path) -> None:
        self.client = client
        self.settings = Settings(
            knowledge_bucket=BUCKET,
            knowledge_cache_dir=tmp / "cache",
            knowledge_max_file_bytes=10_000,
            knowledge_refresh_seconds=30,
        )
        self.indexer = build_indexer(self.settings, client)

    def put(self, source: str, body: str | bytes) -> dict[str, Any]:
        self.client.put_object(Bucket=BUCKET, Key=f"knowledge/{source}", Body=body)
        return handle_knowledge_event(notification(("ObjectCreated:Put", f"knowledge/{source}")), None, self.indexer)

    def delete(self, source: str) -> dict[str, Any]:
        self.client.delete_object(Bucket=BUCKET, Key=f"knowledge/{source}")
        return handle_knowledge_event(notification(("ObjectRemoved:Delete", f"knowledge/{source}")), None, self.indexer)

    def knowledge(self, **kw: Any) -> S3Knowledge:
        return S3Knowledge(
            S3Objects(BUCKET, self.client),
            index_key=INDEX_KEY,
            cache_dir=self.settings.knowledge_cache_dir,
            refresh_seconds=kw.pop("refresh_seconds", 0),
            min_score=0.1,
            **kw,
        )


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[Bucket]:
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield Bucket(client, tmp_path)


def test_an_upload_is_indexed_and_searched_with_its_key_as_source(bucket):
    result = bucket.put("runbooks/deploy.md", DOCS["runbooks/deploy.md"])
    assert result["indexed"] == ["runbooks/deploy.md"]
    [hit, *_] = bucket.knowledge().search("roll back deploy", 3)
    assert (hit.source, hit.heading) == ("runbooks/deploy.md", "Rollback")
    assert bucket.client.head_object(Bucket=BUCKET, Key=INDEX_KEY)["ContentLength"] > 0


def test_an_overwrite_replaces_the_passages(bucket):
    bucket.put("oncall.html", DOCS["oncall.html"])
    bucket.put("oncall.html", DOCS["oncall.html"].replace("database owner", "storage lead"))
    kb = bucket.knowledge()
    assert kb.search("storage lead", 3)[0].source == "oncall.html"
    assert kb.search("database owner", 3) == []
    assert [(s.source, s.passages) for s in kb.sources()] == [("oncall.html", 1)]


def test_the_index_object_is_written_with_its_segments_merged(bucket, tmp_path):
    # Given several uploads, each indexed by its own event
    for source, body in DOCS.items():
        bucket.put(source, body)
    # When the index object is read back
    path = tmp_path / "index.sqlite"
    bucket.client.download_file(BUCKET, INDEX_KEY, str(path))
    index = PassageIndex(path, wal=False)
    # Then the writes left nothing to merge: every reader searches one segment
    assert index.merge_segments() is False
    index.close()


def test_a_delete_removes_the_passages(bucket):
    bucket.put("runbooks/deploy.md", DOCS["runbooks/deploy.md"])
    bucket.put("notes/budget.txt", DOCS["notes/budget.txt"])
    assert bucket.delete("runbooks/deploy.md")["removed"] == ["runbooks/deploy.md"]
    kb = bucket.knowledge()
    assert kb.search("rollback", 3) == []
    assert [s.source for s in kb.sources()] == ["notes/budget.txt"]


def test_events_follow_the_objects_state_not_the_events_order(bucket):
    # Given an object put, then deleted, whose put notification arrives last (S3 does not order them)
    bucket.client.put_object(Bucket=BUCKET, Key="knowledge/late.md", Body=b"# Late\n\nzebra crossing")
    bucket.client.delete_object(Bucket=BUCKET, Key="knowledge/late.md")
    handle_knowledge_event(notification(("ObjectRemoved:Delete", "knowledge/late.md")), None, bucket.indexer)
    handle_knowledge_event(notification(("ObjectCreated:Put", "knowledge/late.md")), None, bucket.indexer)
    # Then the deleted object is not searched
    assert bucket.knowledge().search("zebra", 3) == []


def test_bad_objects_are_skipped_with_their_reason(bucket):
    bucket.put("good.md", DOCS["notes/security.md"])
    assert bucket.put("blob.md", b"\x00\x01binary")["skipped"] == ["blob.md"]
    assert bucket.put("huge.md", "word " * 5000)["skipped"] == ["huge.md"]
    kb = bucket.knowledge()
    assert {s.source: s.reason for s in kb.skipped()} == {
        "blob.md": "binary content",
        "huge.md": "larger than KNOWLEDGE_MAX_FILE_BYTES (10000 bytes)",
    }
    assert kb.search("signing keys", 3)[0].source == "good.md"


def test_two_uploads_at_once_keep_each_others_passages(bucket):
    # Given two indexers (two Lambda instances) that both download the index before either puts it
    both_downloaded = threading.Barrier(2, timeout=10)
    put_lock = threading.Lock()  # S3's conditional put is atomic; moto's check-then-write is not

    class Racing(S3Objects):
        def download(self, key: str, dest: Path) -> str | None:
            etag = super().download(key, dest)
            if not getattr(local, "raced", False):
                local.raced = True
                both_downloaded.wait()
            return etag

        def put_if(self, key: str, path: Path, etag: str | None) -> str:
            with put_lock:
                return super().put_if(key, path, etag)

    local = threading.local()
    bucket.put("seed.md", "# Seed\n\nThe first document.")
    results: dict[str, Any] = {}

    def upload(source: str, text: str) -> None:
        bucket.client.put_object(Bucket=BUCKET, Key=f"knowledge/{source}", Body=text)
        indexer = S3KnowledgeIndexer(
            Racing(BUCKET, bucket.client),
            prefix="knowledge/",
            index_key=INDEX_KEY,
            max_file_bytes=10_000,
            sleep=lambda _: None,
        )
        results[source] = handle_knowledge_event(
            notification(("ObjectCreated:Put", f"knowledge/{source}")), None, indexer
        )

    threads = [
        threading.Thread(target=upload, args=("a.md", "# Alpha\n\nalpha aardvark")),
        threading.Thread(target=upload, args=("b.md", "# Beta\n\nbeta bison")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then one lost the conditional put and applied again on the winner's index, and both are searched
    assert sorted(r["attempts"] for r in results.values()) == [1, 2]
    kb = bucket.knowledge()
    assert kb.search("aardvark", 3)[0].source == "a.md"
    assert kb.search("bison", 3)[0].source == "b.md"
    assert [s.source for s in kb.sources()] == ["a.md", "b.md", "seed.md"]


def test_the_retriever_loads_once_and_picks_up_a_new_etag_after_the_refresh_interval(bucket):
    now = [1000.0]
    bucket.put("notes/budget.txt", DOCS["notes/budget.txt"])
    kb = bucket.knowledge(refresh_seconds=30, clock=lambda: now[0])
    # Cold: one download
    assert kb.search("budget", 3)
    assert kb.loads == 1
    bucket.put("notes/security.md", DOCS["notes/security.md"])
    # Within the interval the container keeps its copy (no S3 call at all)
    now[0] += 29
    assert kb.search("signing keys", 3) == []
    # After it, the new ETag is seen and the index downloaded again, once
    now[0] += 1
    assert kb.search("signing keys", 3)[0].source == "notes/security.md"
    assert kb.search("budget", 3)
    assert kb.loads == 2
    # An unchanged ETag is not downloaded again, and only one copy stays in /tmp
    now[0] += 60
    kb.search("budget", 3)
    assert kb.loads == 2
    assert len(list(bucket.settings.knowledge_cache_dir.glob("index-*.sqlite"))) == 1


def test_before_any_upload_the_retriever_finds_nothing(bucket):
    kb = bucket.knowledge()
    assert kb.search("anything at all", 3) == []
    assert kb.sources() == []


def test_knowledge_uploads_never_start_tasks_and_task_uploads_are_not_indexed(bucket):
    import asyncio

    class NoService:
        async def create(self, *a: Any, **kw: Any) -> Any:
            raise AssertionError("a knowledge upload started a task")

    task_id = asyncio.run(
        start_task_from_s3_object(
            NoService(),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            "owner",
            bucket=BUCKET,
            key="knowledge/runbooks/deploy.txt",
            version_id=None,
            etag=None,
            max_bytes=1000,
        )
    )
    assert task_id is None
    bucket.client.put_object(Bucket=BUCKET, Key="tasks/t.txt", Body=b"Explain retries")
    result = handle_knowledge_event(notification(("ObjectCreated:Put", "tasks/t.txt")), None, bucket.indexer)
    assert (result["ignored"], result["indexed"]) == (["tasks/t.txt"], [])


def test_the_same_folder_gives_the_same_passages_on_both_wirings(bucket, tmp_path):
    # Given one folder, indexed locally and uploaded to the knowledge prefix
    folder = tmp_path / "docs"
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        bucket.client.put_object(Bucket=BUCKET, Key=f"knowledge/{name}", Body=text.encode())
    batch = notification(*[("ObjectCreated:Put", f"knowledge/{name}") for name in DOCS])
    assert sorted(handle_knowledge_event(batch, None, bucket.indexer)["indexed"]) == sorted(DOCS)
    local = FolderKnowledge(folder, tmp_path / "knowledge.db", max_file_bytes=10_000, min_score=0.1)
    local.sync()
    s3 = bucket.knowledge()
    # Then both list the same sources and cite the same passages for the same questions
    assert [(s.source, s.passages, s.size) for s in local.sources()] == [
        (s.source, s.passages, s.size) for s in s3.sources()
    ]
    for question in ("how do I roll back a deploy", "replication lag", "signing keys", "sourdough bread"):
        assert retrieve(local, question) == retrieve(s3, question)


def test_the_aws_retriever_searches_the_index_object(bucket, aws_env):
    bucket.put("runbooks/deploy.md", DOCS["runbooks/deploy.md"])
    settings = Settings(
        store="dynamodb", knowledge_bucket=BUCKET, knowledge_cache_dir=bucket.settings.knowledge_cache_dir
    )
    system = build_aws_system(settings)
    assert isinstance(system.knowledge, S3Knowledge)
    system.knowledge.objects._client = bucket.client  # type: ignore[attr-defined]
    from agentic.agents.base import StepContext
    from agentic.models import ExecutionStep

    step = ExecutionStep(step_id="s", agent_type="retriever", description="", input_data={"query": "roll back"})
    out = system.ops.registry.get("retriever").run(step, StepContext("t", "roll back"))
    assert parse_passages(out)[0].source == "runbooks/deploy.md"


@pytest.mark.parametrize("name", ["knowledge_indexer_put.json", "knowledge_indexer_delete.json"])
def test_the_indexer_function_with_its_event_files(bucket, aws_env, name):
    # Given the deployed function's environment, and the object the put event names
    aws_env.setenv("KNOWLEDGE_BUCKET", BUCKET)
    aws_env.setenv("KNOWLEDGE_CACHE_DIR", str(bucket.settings.knowledge_cache_dir))
    reset_indexer()
    key = "knowledge/runbooks/deploy and rollback.md"
    bucket.client.put_object(Bucket=BUCKET, Key=key, Body=DOCS["runbooks/deploy.md"].encode())
    if name == "knowledge_indexer_delete.json":
        invoke("KnowledgeIndexerFunction", load_event("knowledge_indexer_put.json"))
        bucket.client.delete_object(Bucket=BUCKET, Key=key)
    try:
        result = invoke("KnowledgeIndexerFunction", load_event(name))
    finally:
        reset_indexer()
    source = "runbooks/deploy and rollback.md"
    if name == "knowledge_indexer_put.json":
        assert result["indexed"] == [source]
        assert bucket.knowledge().search("rollback", 3)[0].source == source
    else:
        assert result["removed"] == [source]
        assert bucket.knowledge().sources() == []


def test_every_knowledge_event_file_is_replayed_here():
    assert {p.name for p in EVENTS.glob("knowledge_indexer_*.json")} == {
        "knowledge_indexer_put.json",
        "knowledge_indexer_delete.json",
    }
