"""Who owns a task on AWS: the caller's IAM principal, decided here and nowhere else.

API Gateway and Function URLs report the caller's ARN (``requestContext.authorizer.iam.userArn``).
For an assumed role that is the *session* ARN, ``arn:aws:sts::<account>:assumed-role/<role>/<session>``:
the session name changes with every EC2/ECS/Lambda credential refresh and CI run, and whoever may
assume the role chooses it freely. So by default (``OWNER_IDENTITY=role``) the owner is the principal
as IAM sees it:

============================================================  ==============================================
caller (userArn)                                              owner
============================================================  ==============================================
``arn:aws:iam::111122223333:user/dev/alice`` (IAM user)       the same ARN
``arn:aws:sts::111122223333:assumed-role/ci/run-42`` (role)   ``arn:aws:iam::111122223333:role/ci``
``arn:aws:sts::111122223333:federated-user/bob``              the same ARN (GetFederationToken's user)
``arn:aws:iam::111122223333:root`` (the account root)         the same ARN
============================================================  ==============================================

Every session of a role shares its tasks: that is what a role is for (and what IAM policies see).
A role's path is not in the session ARN, so the owner leaves it out; role names are unique in an
account, so ``role/<name>`` still names one role. ``OWNER_IDENTITY=session`` keeps the full session
ARN instead (each session is its own owner). The ARN given for triggered tasks (``TRIGGER_OWNER``)
goes through the same function, so a role's ARN with a path matches that role's callers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from agentic.settings import get_settings

if TYPE_CHECKING:  # the trigger functions use task_owner and never load the web framework
    from fastapi import Request

OwnerIdentity = Literal["role", "session"]

_ASSUMED_ROLE = re.compile(r"^arn:(?P<partition>aws[a-z-]*):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/.+$")
_ROLE = re.compile(r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/(?:.*/)?(?P<role>[^/]+)$")


def task_owner(arn: str, identity: OwnerIdentity = "role") -> str:
    """The owner of the tasks of the principal ``arn`` (see the module's table)."""
    arn = arn.strip()
    if identity == "session":
        return arn
    match = _ASSUMED_ROLE.match(arn) or _ROLE.match(arn)
    if match:
        return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"
    return arn


def iam_owner(request: Request) -> str:
    """The identity resolver of the FastAPI app on AWS (the API functions behind Mangum, the stream
    function behind the Web Adapter): the signed caller, as the owner of its tasks."""
    from agentic.api.identity import iam_identity

    return task_owner(iam_identity(request), get_settings().owner_identity)


def event_owner(event: dict[str, Any]) -> str:
    """The caller of the API functions with ``ApiFront=lean`` (an API Gateway event; its request context
    is the only source: a header could be sent by anyone), as the owner of its tasks."""
    from agentic.api.identity import NO_IAM_IDENTITY, iam_user_arn
    from agentic.errors import Unauthorized

    context = event.get("requestContext")
    arn = iam_user_arn(context if isinstance(context, dict) else {})
    if not arn:
        raise Unauthorized(NO_IAM_IDENTITY)
    return task_owner(arn, get_settings().owner_identity)
