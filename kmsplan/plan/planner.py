"""Making a plan: validated stack + live state read through the backend -> an immutable `Plan`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from kmsplan.errors import KmsplanError
from kmsplan.plan import guards
from kmsplan.plan.backend import Backend
from kmsplan.plan.diff import desired_copies, diff
from kmsplan.plan.live import LiveState, read_live
from kmsplan.plan.model import Flags, Plan
from kmsplan.stack import Stack, format_text, has_errors, load_stack
from kmsplan.stack.compiler import without_gc_pauses


class StackInvalid(KmsplanError):
    """The stack has validation errors: nothing reaches the store."""


def load_valid_stack(paths: Sequence[str]) -> Stack:
    stack, findings = load_stack(list(paths))
    if stack is None or has_errors(findings):
        raise StackInvalid("the stack is not valid:\n" + format_text([f for f in findings if f.is_error]).rstrip(),
                           hint="fix the findings above (`kmsplan validate` lists them all); nothing was read or changed")
    return stack


def stack_files(stack: Stack) -> dict[str, str]:
    """Each stack file -> sha256 of its bytes. (The policy files they name are covered by
    `digest`, through the resolved policies.)"""
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in sorted(stack.files)}


def digest(stack: Stack, files: dict[str, str]) -> str:
    """Over the stack files' bytes and every resolved key policy. The stack is a function of its
    files alone (no environment is read) except for the `policy_file`s they name, which the
    resolved policies cover: an edited policy file changes the digest."""
    text = "".join(f"{p}\0{h}\n" for p, h in sorted(files.items()))
    text += "".join(f"{name}\0{region}\0{copy.decl.policy.text if copy.decl.policy else ''}\n"
                    for (name, region), copy in sorted(desired_copies(stack).items()))
    return hashlib.sha256(text.encode()).hexdigest()


def check_account(stack: Stack, backend: Backend) -> None:
    if stack.account != backend.account:
        raise KmsplanError(f"stack {stack.name} is for account {stack.account}, the store is account {backend.account}",
                           hint="point --store at the store of the stack's account, or fix `account:` in the stack")
    regions = {stack.region} | {k.region for k in stack.keys} | {r.region for k in stack.keys for r in k.replicas}
    missing = sorted(regions - set(backend.regions))
    if missing:
        raise KmsplanError(f"stack {stack.name} uses region(s) {', '.join(missing)} that the store does not have "
                           f"(it has {', '.join(backend.regions)})",
                           hint="create the store with those regions, or change the stack's regions")


@without_gc_pauses()
def make_plan(stack: Stack, backend: Backend, flags: Flags) -> tuple[Plan, LiveState]:
    """Read, diff, guard. The plan carries everything apply needs and what it was computed from."""
    check_account(stack, backend)
    live = read_live(backend.clients(), stack.name)
    now = backend.now()
    changes = diff(stack, live, now)
    involved = [key.arn for key in live.keys]
    context = guards.GuardContext(
        account=backend.account, principal=backend.principal_record(backend.principal),
        principals=backend.principals(), last_use=backend.last_use(involved), flags=flags, now=now)
    findings = guards.check(changes, live, context)
    files = stack_files(stack)
    plan = Plan(stack=stack.name, account=backend.account, principal=backend.principal,
                created_at=now.isoformat(timespec="seconds"), stack_files=files, stack_digest=digest(stack, files),
                live_fingerprint=live.fingerprint(), flags=flags, changes=tuple(changes), findings=tuple(findings))
    return plan, live
