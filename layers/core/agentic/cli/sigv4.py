"""SigV4 request signing for ``agentic --aws``, with credentials from the standard AWS chain.

API Gateway (the stack's ``ApiUrl``) is signed for the service ``execute-api``; the streaming Lambda
Function URL (``StreamUrl``) for ``lambda``. botocore is imported only when ``--aws`` is used.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx


class SigV4(httpx.Auth):
    """Signs each request (method, URL, body, content type) with botocore's ``SigV4Auth``."""

    requires_request_body = True

    def __init__(self, credentials: Any, service: str, region: str) -> None:
        self.credentials = credentials
        self.service = service
        self.region = region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        headers = {}
        if "content-type" in request.headers:
            headers["Content-Type"] = request.headers["content-type"]
        aws_request = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
        SigV4Auth(self.credentials.get_frozen_credentials(), self.service, self.region).add_auth(aws_request)
        for name, value in aws_request.headers.items():
            request.headers[name] = value
        yield request


def region_of(url: str) -> str | None:
    """The region in an API Gateway (``<id>.execute-api.<region>.amazonaws.com``) or Function URL
    (``<id>.lambda-url.<region>.on.aws``) host name."""
    parts = httpx.URL(url).host.split(".")
    for marker in ("execute-api", "lambda-url"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1]
    return None


def aws_auth(api_url: str, stream_url: str, region: str | None) -> tuple[SigV4, SigV4]:
    """Signers for the API and the stream URL; raises ``LookupError`` without credentials or region."""
    import botocore.session

    session = botocore.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise LookupError("no AWS credentials found (environment, ~/.aws, SSO or an instance role)")
    api_region = region or region_of(api_url) or session.get_config_variable("region")
    stream_region = region or region_of(stream_url) or api_region
    if not api_region or not stream_region:
        raise LookupError("no AWS region: pass --region or set AWS_REGION")
    return SigV4(credentials, "execute-api", api_region), SigV4(credentials, "lambda", stream_region)
