import json

import pytest

from agentic.pipeline import PipelineDefinitionError, load_pipeline, parse_pipeline

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
