"""Lambda SnapStart hooks (template parameter ``SnapStart``): what a restored snapshot must redo.

With SnapStart, a function's initialized environment (its imports, module state) is snapshotted
when a version is published and every cold start restores that one snapshot. Two things must
not be shared between the restored environments:

- randomness: ``random``'s state is in the snapshot, so every environment would draw the same
  retry jitter and fault rolls; re-seeded after each restore (``uuid4`` and ``secrets`` read the
  OS and need nothing);
- network clients: a connection opened before the snapshot is dead after a restore, and
  credentials in it would be the snapshot's. The system (whose adapters create their boto3 and
  HTTP clients on first use) is dropped after a restore, so its clients are created afresh.

And one thing is worth doing before the snapshot: the pydantic models are built on first use (an
ordinary cold start imports faster, see ``models.py``), so ``before_snapshot`` builds them, and the
snapshot holds them ready for every restore's first request.

The runtime's ``snapshot_restore_py`` provides the registration (Python 3.12+ managed runtimes);
elsewhere (tests, the local server) there is nothing to register.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .wiring import reset_system


def after_restore() -> None:
    random.seed()
    reset_system()


def before_snapshot() -> None:
    from agentic.models import build_models
    from agentic.settings import Settings

    build_models()
    Settings.model_rebuild()


Register = Callable[[Callable[[], None]], object]


def install(register: Register | None = None, register_before: Register | None = None) -> bool:
    """Register ``after_restore`` and ``before_snapshot``; False when the runtime offers no SnapStart hooks."""
    if register is None:
        try:
            from snapshot_restore_py import (  # type: ignore[import-not-found]
                register_after_restore,
                register_before_snapshot,
            )
        except ImportError:
            return False
        register, register_before = register_after_restore, register_before_snapshot
    register(after_restore)
    if register_before is not None:
        register_before(before_snapshot)
    return True
