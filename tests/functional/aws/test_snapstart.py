"""SnapStart hooks: a restored snapshot draws its own randomness and builds its own clients."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from agentic.aws import snapstart
from agentic.aws.wiring import get_system
from tests.functional.aws.support import ROOT


def test_the_hook_is_registered_where_the_runtime_offers_it():
    registered = []
    assert snapstart.install(registered.append) is True
    assert registered == [snapstart.after_restore]
    before: list[object] = []
    assert snapstart.install(registered.append, before.append) is True
    assert before == [snapstart.before_snapshot]
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


def test_before_the_snapshot_the_models_deferred_at_import_are_built():
    # Given a fresh interpreter that imported a pipeline function (no model built, see test_cold_imports)
    code = """
import json, sys
sys.path.insert(0, "functions/agents")
import retriever
from agentic import models, settings
from agentic.aws import snapstart
lazy = [m for m in vars(models).values() if isinstance(m, type) and issubclass(m, models.LazyModel)]
lazy = [m for m in lazy if m is not models.LazyModel and m is not models.ApiModel] + [settings.Settings]
before = [m.__name__ for m in lazy if m.__pydantic_complete__]
# When Lambda runs the hooks before it takes the snapshot
snapstart.before_snapshot()
print(json.dumps({"before": before, "after": sorted(m.__name__ for m in lazy if not m.__pydantic_complete__)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Then every model the functions read and write is built into the snapshot
    assert result == {"before": [], "after": []}
