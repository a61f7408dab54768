"""Fixtures of the verify tests.

verify checks stacks applied by the reconciler, so these tests drive the reconciler's own test
helpers (tests/plan/plan_helpers.py: the principals, `Kit`, stack writers, the CLI runner and the
store worker), imported rather than copied: that folder is put on the import path here. In-process
tests share the session store (tests/conftest.py); CLI tests make a store of their own.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plan"))
