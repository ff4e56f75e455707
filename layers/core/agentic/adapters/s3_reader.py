"""Reads task documents from S3, refusing what can never be a task before downloading it."""

from __future__ import annotations

from typing import Any

from agentic.service.intake import UnusableInput


class S3DocumentReader:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:  # built on first use, not at import (cold start)
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def read(self, bucket: str, key: str, version_id: str | None, max_bytes: int) -> bytes:
        from botocore.exceptions import ClientError

        args = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        try:
            obj = self.client.get_object(**args)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchVersion", "InvalidObjectState"):
                raise UnusableInput(f"object cannot be read: {code}") from None
            # Throttling, 5xx, and AccessDenied (a permissions mistake, not a bad object): raise, so
            # the event is retried and then kept in the failure queue instead of silently dropped.
            raise
        size = int(obj.get("ContentLength", 0))
        if size > max_bytes:
            obj["Body"].close()
            raise UnusableInput(f"object is {size} bytes; the limit is {max_bytes}")
        data: bytes = obj["Body"].read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UnusableInput(f"object is larger than {max_bytes} bytes")
        return data
