"""The local wiring: SQLite store + in-process executor, served by uvicorn. ``python -m agentic.local``."""
