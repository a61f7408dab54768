"""The reconciler's workflows: plan, apply (a fresh or a saved plan), drift and import.

Each takes a validated stack or a saved plan and a backend; the CLI only parses options and
renders. Apply holds the stack's lock for its whole run and refuses a saved plan that is
unsigned, edited, stale (the live state moved) or made from stack files that have changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from kmsplan.errors import KMSError, KmsplanError
from kmsplan.plan import signing
from kmsplan.plan.apply import Applier, ApplyFailed, StepResult
from kmsplan.plan.backend import Backend
from kmsplan.plan.diff import desired_copies, diff, live_attributes
from kmsplan.plan.drift import drift_items
from kmsplan.plan.live import ADDRESS_TAG, PROTECT_TAG, STACK_TAG, WINDOW_TAG, read_key, read_live
from kmsplan.plan.model import FORMAT_VERSION, Drift, Flags, Plan
from kmsplan.plan.planner import check_account, digest, make_plan, stack_files
from kmsplan.plan.signing import PlanRejected
from kmsplan.stack import Stack, load_stack
from kmsplan.stack.compiler import without_gc_pauses


def plan_stack(stack: Stack, backend: Backend, flags: Flags, *, sign: bool = False) -> Plan:
    plan, _ = make_plan(stack, backend, flags)
    if sign and not plan.has_errors:
        plan = signing.sign(plan, _control_client(backend))
    return plan


def _control_client(backend: Backend):
    """Plan signatures and locks live in the store's first region."""
    return backend.client(backend.regions[0])


def read_plan_file(path: str | Path) -> Plan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise PlanRejected(f"{path} is a plan of format {data.get('format_version')!r}, this kmsplan reads "
                               f"{FORMAT_VERSION}", hint="make the plan again with this version of kmsplan")
        return Plan.from_data(data)
    except OSError as error:
        raise KmsplanError(f"cannot read the plan {path}: {error.strerror}", hint="check the path") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise PlanRejected(f"{path} is not a kmsplan plan ({type(error).__name__}: {error})",
                           hint="pass a file written by `kmsplan plan --out`") from None


def check_saved_plan(plan: Plan, backend: Backend) -> None:
    """The store's account first (another store's key cannot vouch for the plan, and "edited" would
    mislead), then the principal the guards were evaluated for, then the signature (an edited plan
    says nothing trustworthy), then the stack files."""
    if plan.account != backend.account:
        raise PlanRejected(f"the plan is for account {plan.account}, the store is account {backend.account}",
                           hint="apply it to the store it was made on")
    if plan.principal != backend.principal:
        raise PlanRejected(f"the plan was made as {plan.principal}, not {backend.principal}: its lockout checks "
                           "hold for the principal that made it", hint="apply it as that principal (omit --principal), "
                           "or make a new plan as this one")
    signing.verify(plan, _control_client(backend))
    missing = [p for p in plan.stack_files if not Path(p).is_file()]
    if missing:
        raise PlanRejected(f"the plan's stack file {missing[0]} is missing",
                           hint="apply from the folder the plan was made in, with the same files")
    stack, _ = load_stack(sorted(plan.stack_files))
    files = stack_files(stack) if stack else {}
    changed = sorted(p for p in plan.stack_files if files.get(p) != plan.stack_files[p])
    if stack is None or changed or digest(stack, files) != plan.stack_digest:
        what = f": {', '.join(changed)}" if changed else (" (a policy file they name)" if stack else "")
        raise PlanRejected("the stack files changed since the plan was made" + what,
                           hint="run `kmsplan plan --out PLAN` again and review the new plan")


def apply_plan(plan: Plan, backend: Backend, *, saved: bool,
               progress: Callable[[str], None] = lambda line: None) -> tuple[list[StepResult], str | None]:
    """Apply under the stack's lock; (step results, lock notice). Raises ApplyFailed on a failed step."""
    if plan.has_errors:
        raise PlanRejected("the plan has guard errors and cannot be applied",
                           hint="fix them or plan with the flags that allow them, then apply the new plan")
    if saved:
        check_saved_plan(plan, backend)
    control = _control_client(backend)
    notice = signing.acquire(control, plan.stack, backend.principal, backend.now())
    try:
        live = read_live(backend.clients(), plan.stack)
        if live.fingerprint() != plan.live_fingerprint:
            raise PlanRejected("the live store changed since the plan was made (the plan is stale)",
                               hint="run plan again and review the new plan")
        try:
            return Applier(backend, plan, live, progress).run(), notice
        except ApplyFailed as failure:
            if saved:  # the steps done made this plan stale: only a new plan (or `apply PATH`) goes on
                failure.hint = ("fix the cause, then run `kmsplan plan --out PLAN` and apply the new plan "
                                "(or `kmsplan apply PATH`): it plans only what is left")
            raise
    finally:
        signing.release(control, plan.stack)


def force_unlock(backend: Backend, stack: str) -> dict | None:
    control = _control_client(backend)
    holder = signing.lock_holder(control, stack)
    signing.release(control, stack)
    return holder


@without_gc_pauses()
def drift(stack: Stack, backend: Backend) -> list[Drift]:
    check_account(stack, backend)
    live = read_live(backend.clients(), stack.name)
    return drift_items(diff(stack, live, backend.now()), live)


def import_key(stack: Stack, backend: Backend, address: str, reference: str) -> str:
    """Tag an existing key as `address` of `stack`; the next plan shows what else differs."""
    check_account(stack, backend)
    copies = {c.address: c for c in desired_copies(stack).values()}
    if address not in copies:
        known = ", ".join(sorted(copies)) or "none"
        raise KmsplanError(f"{address} is not a key address of stack {stack.name}",
                           hint=f"declare it in the stack first; key addresses are: {known}")
    copy = copies[address]
    kms = backend.client(copy.region)
    try:
        key_id = kms.describe_key(KeyId=reference)["KeyMetadata"]["KeyId"]
    except KMSError as error:
        raise KmsplanError(f"cannot find key {reference} in {copy.region}: {error.message}",
                           hint=f"give the key id, ARN or alias of the key in {copy.region}") from None
    key = read_key(kms, copy.region, key_id)
    owner = key.tags.get(STACK_TAG)
    if owner and (owner != stack.name or key.tags.get(ADDRESS_TAG) != address):
        raise KmsplanError(f"key {key.arn} already belongs to {owner} as {key.tags.get(ADDRESS_TAG)}",
                           hint="a key belongs to one stack address; remove it from there first")
    if owner:
        return f"{key.arn} is already {address} of stack {stack.name}"
    bound = [k for k in read_live(backend.clients(), stack.name).keys if k.address == address]
    if bound:
        raise KmsplanError(f"{address} is already bound to {bound[0].arn}",
                           hint="an address names one key; import into another address")
    _check_importable(copy, live_attributes(key), key.multi_region_type, address)
    kms.tag_resource(KeyId=key_id, Tags=[
        {"TagKey": STACK_TAG, "TagValue": stack.name}, {"TagKey": ADDRESS_TAG, "TagValue": address},
        {"TagKey": PROTECT_TAG, "TagValue": "true" if copy.key.protect else "false"},
        {"TagKey": WINDOW_TAG, "TagValue": str(copy.decl.deletion_window_days)}])
    return f"imported {key.arn} as {address} of stack {stack.name}; run `kmsplan plan` to see what else differs"


def _check_importable(copy, live: dict, mr_type: str | None, address: str) -> None:
    declared = {"spec": copy.key.spec, "usage": copy.key.usage, "multi_region": copy.key.multi_region}
    wrong = [f"{name} is {live[name]} live but {value} declared" for name, value in declared.items()
             if live[name] != value]
    if copy.key.multi_region:
        expected = "PRIMARY" if copy.is_primary else "REPLICA"
        if mr_type != expected:
            wrong.append(f"it is a {mr_type} key but {address} declares a {expected}")
    if wrong:
        raise KmsplanError(f"cannot import into {address}: {'; '.join(wrong)}",
                           hint="these attributes are immutable: declare the key as it is, or import another key")
