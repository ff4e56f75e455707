"""SnapStart hooks: a restored snapshot draws its own randomness and builds its own clients."""

from __future__ import annotations

import random

from agentic.aws import snapstart
from agentic.aws.wiring import get_system


def test_the_hook_is_registered_where_the_runtime_offers_it():
    registered = []
    assert snapstart.install(registered.append) is True
    assert registered == [snapstart.after_restore]
    # Outside Lambda there is no snapshot_restore_py: nothing to register, and no error.
    assert snapstart.install() is False


def test_after_a_restore_randomness_is_reseeded_and_the_system_rebuilt(aws_env):
    # Given an environment initialized once (the snapshot): its system built, its random state set
    system = get_system()
    random.seed(17)
    snapshot_draws = [random.random() for _ in range(3)]
    random.seed(17)
    # When it is restored
    snapstart.after_restore()
    # Then it draws other numbers than every other restore of the same snapshot would
    assert [random.random() for _ in range(3)] != snapshot_draws
    # And its system (with the clients its adapters create) is built anew on first use
    assert get_system() is not system
