"""API Gateway (HTTP API, AWS_IAM) -> the core's FastAPI routers through Mangum.

Two functions share this file, each serving only its routes (least privilege):
``create_handler`` POST /tasks and the task controls POST /tasks/{task_id}/cancel|approve|reject|retry;
``query_handler`` GET /tasks, GET /tasks/{task_id}/status, GET /health.
"""

from agentic.api.routes import control, health
from agentic.api.routes.tasks import read_router, write_router
from agentic.aws.http_handlers import http_handler

create_handler = http_handler(write_router, control.router)
query_handler = http_handler(read_router, health.router)
