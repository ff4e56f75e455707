"""Who is calling: the task owner. Locally a bearer token (or one default owner); on AWS the IAM caller."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from agentic.errors import Unauthorized
from agentic.settings import Settings

if TYPE_CHECKING:  # the Lambda API functions read the IAM caller from the event, with no web framework
    from fastapi import Request

IdentityResolver = Callable[["Request"], str]

#: Why a request on AWS has no owner.
NO_IAM_IDENTITY = "the request carries no IAM identity (call it with SigV4-signed credentials)"


def bearer_identity(settings: Settings) -> IdentityResolver:
    tokens = settings.owner_tokens()

    def resolve(request: Request) -> str:
        if not tokens:
            return settings.default_owner
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            for known, owner in tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return owner
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")

    return resolve


def iam_user_arn(request_context: dict[str, object]) -> str | None:
    """The caller's ARN that API Gateway's or a Function URL's IAM authorizer put in the request context."""
    authorizer = request_context.get("authorizer")
    if isinstance(authorizer, dict):
        iam = authorizer.get("iam")
        if isinstance(iam, dict) and iam.get("userArn"):
            return str(iam["userArn"])
    return None


def iam_identity(request: Request) -> str:
    """The IAM caller of an API Gateway HTTP API (via Mangum) or a Function URL (via the Web Adapter)."""
    event = request.scope.get("aws.event")
    if isinstance(event, dict):
        # Behind Mangum the Lambda event is the only source; a header could be sent by anyone.
        arn = iam_user_arn(event.get("requestContext") or {})
        if arn:
            return arn
        raise Unauthorized(NO_IAM_IDENTITY)
    # The Lambda Web Adapter forwards the Function URL's request context as this header (it sets
    # the header itself from the invocation event).
    raw = request.headers.get("x-amzn-request-context")
    if raw:
        try:
            arn = iam_user_arn(json.loads(raw))
        except ValueError:
            arn = None
        if arn:
            return arn
    raise Unauthorized(NO_IAM_IDENTITY)
