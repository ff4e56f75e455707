"""API Gateway (HTTP API, AWS_IAM) -> the core's API routes with no web framework, when the template's
``ApiFront`` is ``lean`` (cold start: see ``agentic.aws.lean_http``); the answers are those of
``app.py`` (FastAPI through Mangum, the default).

Two functions share this file, each serving only its routes (least privilege):
``create_handler`` POST /tasks and the task controls POST /tasks/{task_id}/cancel|approve|reject|retry;
``query_handler`` GET /tasks, GET /tasks/{task_id}/status, GET /health.
"""

from agentic.aws.http_routes import CREATE_ROUTES, QUERY_ROUTES
from agentic.aws.lean_http import http_handler

create_handler = http_handler(CREATE_ROUTES)
query_handler = http_handler(QUERY_ROUTES)
