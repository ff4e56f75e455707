"""The AWS wiring: the DynamoDB store, the Step Functions executor, and the Lambda handler logic.

The modules under ``functions/`` are a few lines each and call into here:

- ``wiring``            builds the system from ``Settings`` once per Lambda container (cached),
- ``powertools``        Logger / Metrics / lazy Tracer around every handler,
- ``pipeline_handlers`` the agent and finalize handlers the state machine invokes,
- ``http_handlers``     the API handlers (the FastAPI routers through Mangum); ``lean_http`` the same answers
                        with no web framework (``ApiFront=lean``; routes: ``http_routes``),
- ``trigger_handlers``  the S3 and SQS trigger handlers (an object or a message becomes a task).

Importing this package builds no boto3 client; the clients are created on first use.
"""
