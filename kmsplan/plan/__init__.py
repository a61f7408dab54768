"""The reconciler: diff a stack against the live store, guard, plan, apply, detect drift.

    plan = plan_stack(load_valid_stack(paths), backend, Flags())   # reads only
    results, _ = apply_plan(plan, backend, saved=False)

See docs/reconciler.md for commands, addresses, guards and exit codes.
"""

from kmsplan.plan.apply import ApplyFailed, StepResult
from kmsplan.plan.backend import LocalBackend
from kmsplan.plan.model import Change, Drift, Finding, Flags, Plan
from kmsplan.plan.planner import StackInvalid, load_valid_stack
from kmsplan.plan.reconcile import (
    apply_plan, check_saved_plan, drift, force_unlock, import_key, plan_stack, read_plan_file,
)
from kmsplan.plan.signing import PlanRejected

__all__ = [
    "ApplyFailed", "Change", "Drift", "Finding", "Flags", "LocalBackend", "Plan", "PlanRejected",
    "StackInvalid", "StepResult", "apply_plan", "check_saved_plan", "drift", "force_unlock",
    "import_key", "load_valid_stack", "plan_stack", "read_plan_file",
]
