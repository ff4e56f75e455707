"""What the retriever searches: its sources, the files it skipped, and a search like the retriever's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from agentic.agents.retriever import TOP_K, knowledge_index, retrieve
from agentic.api.deps import Owner
from agentic.api.errors import error_responses
from agentic.knowledge.base import KnowledgeBase

router = APIRouter(prefix="/knowledge", tags=["knowledge"])


class KnowledgeSource(BaseModel):
    source: str = Field(description="File path relative to the knowledge folder (or S3 key under the prefix)")
    passages: int
    size: int = Field(description="Bytes")
    indexed_at: float = Field(description="Unix time the source was last indexed")


class SkippedFile(BaseModel):
    source: str
    reason: str
    size: int


class KnowledgeList(BaseModel):
    sources: list[KnowledgeSource]
    skipped: list[SkippedFile]
    passages: int


class PassagePublic(BaseModel):
    number: int
    source: str
    heading: str
    text: str
    score: float = Field(description="bm25 relevance, higher is better")


class KnowledgeSearch(BaseModel):
    query: str
    passages: list[PassagePublic]


def _knowledge(request: Request) -> KnowledgeBase:
    knowledge: KnowledgeBase | None = getattr(request.app.state, "knowledge", None)
    return knowledge if knowledge is not None else knowledge_index()


# Sync routes: FastAPI runs them in its thread pool, so a slow index (a download on AWS) never blocks
# the event loop.
@router.get("", response_model=KnowledgeList)
def list_knowledge(request: Request, owner: Owner) -> KnowledgeList:
    """The indexed sources (passages, size, indexed at) and the skipped files with their reason."""
    knowledge = _knowledge(request)
    sources = [KnowledgeSource(**vars(s)) for s in knowledge.sources()]
    return KnowledgeList(
        sources=sources,
        skipped=[SkippedFile(**vars(s)) for s in knowledge.skipped()],
        passages=sum(s.passages for s in sources),
    )


@router.get("/search", response_model=KnowledgeSearch, responses=error_responses(422))
def search_knowledge(
    request: Request,
    owner: Owner,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="The question")],
    k: Annotated[int, Query(ge=1, le=50, description="How many passages")] = TOP_K,
) -> KnowledgeSearch:
    """Ranked passages for ``q``, as the retriever would cite them (none when nothing reaches the threshold)."""
    passages = retrieve(_knowledge(request), q, k)
    return KnowledgeSearch(query=q, passages=[PassagePublic(**vars(p)) for p in passages])
