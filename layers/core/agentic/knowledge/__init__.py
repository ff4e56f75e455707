"""The knowledge base the retriever searches: documents split into passages that keep their source,
indexed with SQLite FTS5 (bm25).

- ``base``     the port (``KnowledgeBase``) and its records; query terms,
- ``extract``  text and sections from .md/.txt/.html/.pdf bytes (bad files raise ``Unusable``),
- ``split``    sections into passages of a few hundred words,
- ``index``    the FTS5 index, in a file or in memory (``PassageIndex``),
- ``builtin``  the documents bundled with the package (the default),
- ``folder``   a local folder kept in an index file beside the data, followed while the server runs.

The S3 index object (indexer and loader) is an adapter: ``agentic.adapters.s3_knowledge``.
Nothing here imports the service or the API.
"""
