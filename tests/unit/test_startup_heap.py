"""The local server exempts what start-up built from the garbage collector (``freeze_startup_heap``):
full collections no longer rescan the objects that live as long as the process."""

import gc

import pytest

from agentic.local.__main__ import GC_YOUNG_THRESHOLD, freeze_startup_heap

pytestmark = pytest.mark.unit


def test_objects_built_at_start_up_are_never_scanned_again_and_young_objects_less_often():
    thresholds = gc.get_threshold()
    # Given an object built at start-up, which the collector tracks
    routes = {"route": ["/tasks"]}
    assert any(o is routes for o in gc.get_objects())
    try:
        # When the server freezes its start-up heap
        freeze_startup_heap()
        # Then no collection scans that object any more, and the young generation is collected less often
        assert not any(o is routes for o in gc.get_objects())
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > thresholds[0]
        # (objects built afterwards are collected as before)
        later = {"task": ["t"]}
        assert any(o is later for o in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
