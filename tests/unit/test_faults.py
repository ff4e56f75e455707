import pytest

from agentic.agents import faults
from agentic.agents.faults import FaultPlan
from agentic.errors import InvalidInput, PermanentAgentError, TransientAgentError
from agentic.settings import Settings

pytestmark = pytest.mark.unit


def test_no_faults_by_default(monkeypatch):
    # Given the default FAULTS setting, and a random draw that would trip any probabilistic rule
    default = Settings.model_fields["faults"].default
    monkeypatch.setattr(faults.random, "random", lambda: 0.0)
    # When it is parsed
    plan = FaultPlan.parse(default)
    # Then there are no rules, and no agent's attempt ever fails, however often it is retried
    assert default == ""
    assert plan.rules == ()
    for agent_type in ("retriever", "analyzer", "writer", "any-other-agent"):
        for attempt in range(10):
            assert plan.check(agent_type, attempt) is None
    # And an empty rule list (stray commas, blanks) is no fault either
    assert FaultPlan.parse(" , ,").rules == ()


def test_transient_fault_fails_the_first_n_attempts_only():
    plan = FaultPlan.parse("retriever:transient:2")
    for attempt in (0, 1):
        with pytest.raises(TransientAgentError):
            plan.check("retriever", attempt)
    plan.check("retriever", 2)
    plan.check("writer", 0)


def test_permanent_fault_and_wildcard():
    with pytest.raises(PermanentAgentError):
        FaultPlan.parse("writer:permanent").check("writer", 5)
    with pytest.raises(TransientAgentError):
        FaultPlan.parse("*:transient:1").check("analyzer", 0)


def test_probability_one_always_fails_and_zero_never():
    with pytest.raises(TransientAgentError):
        FaultPlan.parse("writer:transient:p=1").check("writer", 7)
    FaultPlan.parse("writer:transient:p=0").check("writer", 0)


@pytest.mark.parametrize("spec", ["writer", "writer:sometimes", "writer:transient:x", "writer:transient:p=2"])
def test_bad_rules_are_rejected(spec):
    with pytest.raises(InvalidInput):
        FaultPlan.parse(spec)
