"""The agentic task system's core: models, agents, task lifecycle, stores and the HTTP API.

The same package runs the local server (SQLite store, in-process executor) and the AWS Lambdas
(DynamoDB store, Step Functions executor); only the wiring differs.
"""

__version__ = "0.1.0"
