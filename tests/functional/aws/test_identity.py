"""Who owns a task on AWS (issue 8, items 7 and 8): the caller's IAM principal, decided in one place."""

from __future__ import annotations

import json

import pytest

from agentic.aws.identity import task_owner
from agentic.aws.trigger_handlers import trigger_owner
from agentic.settings import Settings
from tests.functional.aws.support import FakeLambdaContext, http_event, invoke

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

ROLE = "arn:aws:iam::123456789012:role/ci"


@pytest.mark.parametrize(
    ("caller", "owner"),
    [
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
        ("arn:aws:iam::123456789012:user/dev/team/alice", "arn:aws:iam::123456789012:user/dev/team/alice"),
        ("arn:aws:sts::123456789012:assumed-role/ci/run-42", ROLE),
        ("arn:aws:sts::123456789012:assumed-role/ci/i-0abc1234def567890", ROLE),
        ("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0a1b/alice@example.com", None),
        ("arn:aws:sts::123456789012:federated-user/bob", "arn:aws:sts::123456789012:federated-user/bob"),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
        ("arn:aws:iam::123456789012:role/service/ci", ROLE),  # a role ARN with a path (TRIGGER_OWNER)
        ("arn:aws-cn:sts::123456789012:assumed-role/ci/x", "arn:aws-cn:iam::123456789012:role/ci"),
        ("arn:aws-us-gov:iam::123456789012:user/carol", "arn:aws-us-gov:iam::123456789012:user/carol"),
    ],
)
def test_the_owner_is_the_principal_as_iam_sees_it(caller, owner):
    if owner is None:  # an IAM Identity Center permission set is a role too: its users share it
        owner = "arn:aws:iam::123456789012:role/AWSReservedSSO_Dev_0a1b"
    assert task_owner(caller) == owner
    assert task_owner(owner) == owner  # idempotent: an owner is its own owner


def test_session_scope_keeps_the_caller_arn():
    session = "arn:aws:sts::123456789012:assumed-role/ci/run-42"
    assert task_owner(session, "session") == session


def test_a_role_s_sessions_share_its_tasks_through_the_api(moto_table):
    # Given a task created by one session of the ci role
    run_42 = "arn:aws:sts::123456789012:assumed-role/ci/run-42"
    body = json.dumps({"description": "Explain role sessions"})
    created = invoke("CreateTaskFunction", http_event("create_task_post.json", owner=run_42, body=body))
    assert created["statusCode"] == 201, created["body"]
    task_id = json.loads(created["body"])["task_id"]
    # When another session of the role reads it, and another role's session tries to
    run_43 = "arn:aws:sts::123456789012:assumed-role/ci/run-43"
    seen = invoke("QueryTasksFunction", http_event("query_tasks_status.json", owner=run_43, task_id=task_id))
    other = "arn:aws:sts::123456789012:assumed-role/deploy/run-42"
    hidden = invoke("QueryTasksFunction", http_event("query_tasks_status.json", owner=other, task_id=task_id))
    # Then the role owns it; the session name does not matter, the role does
    assert seen["statusCode"] == 200, seen["body"]
    assert hidden["statusCode"] == 404
    listed = invoke("QueryTasksFunction", http_event("query_tasks_list.json", owner=run_43))
    assert [t["task_id"] for t in json.loads(listed["body"])["items"]] == [task_id]


def test_the_session_setting_makes_each_session_its_own_owner(moto_table, aws_env):
    aws_env.setenv("OWNER_IDENTITY", "session")
    from agentic.aws.wiring import reset_system

    reset_system()
    body = json.dumps({"description": "Explain sessions"})
    run_42 = "arn:aws:sts::123456789012:assumed-role/ci/run-42"
    created = invoke("CreateTaskFunction", http_event("create_task_post.json", owner=run_42, body=body))
    task_id = json.loads(created["body"])["task_id"]
    run_43 = "arn:aws:sts::123456789012:assumed-role/ci/run-43"
    other = invoke("QueryTasksFunction", http_event("query_tasks_status.json", owner=run_43, task_id=task_id))
    assert other["statusCode"] == 404


@pytest.mark.parametrize(
    ("configured", "caller"),
    [
        (
            "arn:aws:iam::123456789012:role/agentic-triggered-tasks",
            "arn:aws:sts::123456789012:assumed-role/agentic-triggered-tasks/me",
        ),
        ("arn:aws:iam::123456789012:role/ops/readers", "arn:aws:sts::123456789012:assumed-role/readers/alice"),
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
    ],
)
def test_the_trigger_owner_is_someone_a_caller_can_be(configured, caller):
    owner = trigger_owner(Settings(trigger_owner=configured), FakeLambdaContext("SqsTriggerFunction"))
    assert owner == task_owner(caller)
