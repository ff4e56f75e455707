"""Adapters for the core's ports: stores (SQLite, DynamoDB), executors (local, Step Functions)."""
