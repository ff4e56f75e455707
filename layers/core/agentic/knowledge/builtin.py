"""The documents bundled with the package (the seed's knowledge base): the default knowledge base.

Each document is one passage: its id is the source, its title the heading.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from importlib import resources

from agentic.knowledge.index import PassageIndex
from agentic.knowledge.split import Chunk


@dataclass(frozen=True)
class Document:
    doc_id: str
    topic: str
    title: str
    body: str


def load_documents() -> list[Document]:
    raw = resources.files("agentic.agents").joinpath("knowledge_base.json").read_text(encoding="utf-8")
    return [Document(d["id"], d["topic"], d["title"], d["body"]) for d in json.loads(raw)]


def builtin_index(min_score: float = 0.0) -> PassageIndex:
    """An in-memory index of the bundled documents (a few ms to build)."""
    index = PassageIndex(None, min_score=min_score)
    for doc in load_documents():
        body = doc.body.encode()
        index.replace(
            doc.doc_id, version="builtin", sha256=doc.doc_id, size=len(body), chunks=[Chunk(doc.title, doc.body)]
        )
    index.merge_all_segments()
    return index


_shared: dict[float, PassageIndex] = {}
_shared_lock = threading.Lock()


def shared_builtin_index(min_score: float = 0.0) -> PassageIndex:
    """One index of the bundled documents per process (and threshold)."""
    with _shared_lock:
        if min_score not in _shared:
            _shared[min_score] = builtin_index(min_score)
        return _shared[min_score]
