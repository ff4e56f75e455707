"""The HTTP API: FastAPI routers mounted by the local server and by the Lambda handlers."""
