import json

import pytest

from agentic.pipeline import PipelineDefinitionError, default_definition_text, load_pipeline, parse_pipeline

pytestmark = pytest.mark.unit


def test_step_order_comes_from_the_state_machine_file():
    definition = load_pipeline()
    assert [(s.step_id, s.agent_type) for s in definition.steps] == [
        ("step_001", "retriever"),
        ("step_002", "analyzer"),
        ("step_003", "writer"),
    ]
    assert definition.plan_state == "Plan"


def test_local_time_scale_reproduces_the_seed_retry_table():
    # Given the ASL's IntervalSeconds 1, BackoffRate 2, MaxAttempts 3 and the local scale 0.1
    spec = load_pipeline().steps[0]
    # When each attempt fails transiently
    delays = [spec.retry_delay("TransientAgentError", attempt, time_scale=0.1) for attempt in range(4)]
    # Then the waits are the seed's 0.1, 0.2, 0.4 s, and the 4th attempt is the last
    assert delays[:3] == pytest.approx([0.1, 0.2, 0.4])
    assert delays[3] is None


def test_errors_outside_the_retry_clause_are_not_retried():
    spec = load_pipeline().steps[1]
    assert spec.retry_delay("PermanentAgentError", 0) is None
    assert spec.retry_delay("KeyError", 0) is None
    assert spec.retry_delay("States.Timeout", 0) == 1.0


def test_full_jitter_stays_within_the_backoff_and_the_cap():
    spec = load_pipeline().steps[2]
    for attempt in range(3):
        cap = min(1.0 * 2**attempt, 8.0)
        for _ in range(50):
            delay = spec.retry_delay("TransientAgentError", attempt, jitter=True)
            assert delay is not None
            assert 0 <= delay <= cap


def test_max_delay_caps_long_backoffs():
    asl = {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Task", "Parameters": {"action": "plan"}, "Next": "S"},
            "S": {
                "Type": "Task",
                "Parameters": {"action": "step", "step_id": "s1", "agent_type": "writer"},
                "Retry": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "IntervalSeconds": 3,
                        "MaxAttempts": 6,
                        "BackoffRate": 3,
                        "MaxDelaySeconds": 10,
                    }
                ],
                "End": True,
            },
        },
    }
    spec = parse_pipeline(asl).steps[0]
    assert [spec.retry_delay("Anything", a) for a in range(6)] == [3, 9, 10, 10, 10, 10]


@pytest.mark.parametrize(
    "asl",
    [
        {"StartAt": "Missing", "States": {}},
        {"StartAt": "A", "States": {"A": {"Type": "Task", "Parameters": {"action": "plan"}, "Next": "A"}}},
        {"StartAt": "A", "States": {"A": {"Type": "Task", "Parameters": {"action": "plan"}, "End": True}}},
    ],
)
def test_broken_definitions_are_rejected_clearly(asl):
    with pytest.raises(PipelineDefinitionError):
        parse_pipeline(json.loads(json.dumps(asl)))


def test_the_approval_gate_is_read_from_the_step_it_stands_before():
    # The Write state's Parameters carry approval_timeout_seconds: tasks created with approval stop
    # before the writer, for at most that long (the local runner and the AWS handlers read the same)
    gate = load_pipeline().approval
    assert gate is not None
    assert (gate.state_name, gate.before_step, gate.timeout_seconds) == ("Write", "step_003", 86400)
    # a definition without it has no gate; 0 is a gate without a time limit
    definition = json.loads(default_definition_text()[0])
    del definition["States"]["Write"]["Parameters"]["approval_timeout_seconds"]
    assert parse_pipeline(definition).approval is None
    definition["States"]["Write"]["Parameters"]["approval_timeout_seconds"] = 0
    unlimited = parse_pipeline(definition).approval
    assert unlimited is not None
    assert unlimited.timeout_seconds is None
