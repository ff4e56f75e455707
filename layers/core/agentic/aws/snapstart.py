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


def install(register: Callable[[Callable[[], None]], object] | None = None) -> bool:
    """Register ``after_restore``; False when the runtime offers no SnapStart hooks."""
    if register is None:
        try:
            from snapshot_restore_py import register_after_restore  # type: ignore[import-not-found]
        except ImportError:
            return False
        register = register_after_restore
    register(after_restore)
    return True
