"""KnowledgeIndexerFunction: objects put or deleted under knowledge/ update the S3 knowledge index."""

from agentic.aws.knowledge_handlers import knowledge_indexer_handler

handler = knowledge_indexer_handler()
