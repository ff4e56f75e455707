"""API Gateway (HTTP API, AWS_IAM) -> the core's API routes, with no web framework (cold start: see
``agentic.aws.http_handlers``); the answers are the FastAPI app's.

Two functions share this file, each serving only its routes (least privilege):
``create_handler`` POST /tasks and the task controls POST /tasks/{task_id}/cancel|approve|reject|retry;
``query_handler`` GET /tasks, GET /tasks/{task_id}/status, GET /health.
"""

from agentic.aws.http_handlers import http_handler
from agentic.aws.http_routes import CREATE_ROUTES, QUERY_ROUTES

create_handler = http_handler(CREATE_ROUTES)
query_handler = http_handler(QUERY_ROUTES)
