"""Checks of what a key *is*: its state, rotation, replicas, who may use it, which context it demands.

These read the live store through the KMS API (DescribeKey and what kmsplan.plan.live already
read) and reason over the live key policy and grants with the same evaluator the store
authorizes with. They call no cryptography; kmsplan.verify.crypto does.
"""

from __future__ import annotations

from kmsplan.errors import KMSError
from kmsplan.policy import parse_policy_cached, who_can
from kmsplan.stack.actions import expect_action
from kmsplan.store.ops_keys import default_policy
from kmsplan.verify.contexts import broken, declared_grants, key_facts, requirements
from kmsplan.verify.model import Check
from kmsplan.verify.recorder import format_context
from kmsplan.verify.session import Copy, Session, live_grants, live_policy

_PENDING = ("PendingDeletion", "PendingReplicaDeletion")  # states DescribeKey reports for a dying replica


def state_check(copy: Copy) -> Check:
    """The copy exists, is not pending deletion, and is enabled or disabled as declared."""
    live, declared = copy.live, "Enabled" if copy.desired.decl.enabled else "Disabled"
    if live is None:
        return Check(copy.address, copy.region, "state", False,
                     f"no key in {copy.region} is tagged {copy.address} for this stack; run `kmsplan apply`")
    if live.pending_deletion:
        when = f", deletion date {live.deletion_date:%Y-%m-%d}" if live.deletion_date else ""
        return Check(copy.address, copy.region, "state", False,
                     f"{live.arn} is {live.state}{when}; declared {declared}")
    if live.state != declared:
        return Check(copy.address, copy.region, "state", False,
                     f"{live.arn} is {live.state}; declared {declared}")
    return Check(copy.address, copy.region, "state", True, f"{live.arn} is {live.state}, as declared")


def rotation_check(copy: Copy) -> Check | None:
    """Automatic rotation on with the declared period, or off where declared off (symmetric
    keys only, checked on the primary: replicas share its rotation)."""
    live, key = copy.live, copy.desired.key
    if live is None or live.pending_deletion or key.spec != "SYMMETRIC_DEFAULT" or not copy.desired.is_primary:
        return None
    want = key.rotation
    declared = f"every {want.period_days} days" if want.enabled else "off"
    actual = f"every {live.rotation_period} days" if live.rotation_enabled else "off"
    passed = bool(live.rotation_enabled) == want.enabled and (
        not want.enabled or live.rotation_period == want.period_days)
    evidence = f"GetKeyRotationStatus: rotation {actual}" + (", as declared" if passed else f"; declared {declared}")
    return Check(copy.address, copy.region, "rotation", passed, evidence)


def replicas_check(session: Session, copy: Copy, copies: list[Copy]) -> Check | None:
    """A multi-Region key is the primary in its declared region, with exactly the declared
    replicas alive (a replica pending deletion does not count)."""
    live, key = copy.live, copy.desired.key
    if live is None or live.pending_deletion or not key.multi_region or not copy.desired.is_primary:
        return None
    try:
        meta = session.client(copy.region).describe_key(KeyId=live.arn)["KeyMetadata"]
    except KMSError as error:
        return Check(copy.address, copy.region, "replicas", False, f"DescribeKey failed: {error.code}: {error.message}")
    config = meta.get("MultiRegionConfiguration") or {}
    problems = []
    if config.get("MultiRegionKeyType") != "PRIMARY":
        problems.append(f"it is a {config.get('MultiRegionKeyType', 'single-Region')} key, not the primary")
    primary = (config.get("PrimaryKey") or {}).get("Region")
    if primary != key.region:
        problems.append(f"the primary is in {primary}, declared {key.region}")
    by_arn = {c.live.arn: c.live for c in copies if c.live is not None}
    alive, dying = [], []
    for replica in config.get("ReplicaKeys", []):
        state = _replica_state(session, replica, by_arn)
        if state in ("Enabled", "Disabled"):
            alive.append(replica["Region"])
        elif state in _PENDING:
            dying.append(replica["Region"])
        else:
            problems.append(f"the replica in {replica['Region']} is {state}")
    declared = sorted(r.region for r in key.replicas)
    missing = sorted(set(declared) - set(alive))
    extra = sorted(set(alive) - set(declared))
    if missing:
        problems.append(f"declared replica(s) missing: {', '.join(missing)}")
    if extra:
        problems.append(f"undeclared replica(s): {', '.join(extra)}")
    seen = f"DescribeKey: primary in {primary}, replicas {', '.join(sorted(alive)) or 'none'}"
    if dying:
        seen += f" (pending deletion: {', '.join(sorted(dying))})"
    if problems:
        return Check(copy.address, copy.region, "replicas", False, f"{seen}; " + "; ".join(problems))
    return Check(copy.address, copy.region, "replicas", True, f"{seen}, as declared")


def _replica_state(session: Session, replica: dict, by_arn: dict) -> str:
    if replica["Arn"] in by_arn:
        return by_arn[replica["Arn"]].state
    try:
        meta = session.client(replica["Region"]).describe_key(KeyId=replica["Arn"])["KeyMetadata"]
    except KMSError as error:
        return f"unreadable: {error.code}"
    return meta["KeyState"]


def access_checks(session: Session, copies: list[Copy]) -> list[Check]:
    """`expect:` per action: exactly the declared principals can perform it on the key, by the
    who-can analysis over each copy's live policy and grants and every registered principal.
    A multi-Region key is one key in several regions: a principal that can act on any copy can
    act on the key material, so the principals of all copies count together."""
    alive = [c for c in copies if c.live is not None and not c.live.pending_deletion]
    expect = copies[0].desired.key.expect if copies else {}
    if not alive or not expect:
        return []
    home = copies[0]
    regions = ", ".join(c.region for c in alive)
    out = []
    for name, wanted in expect.items():
        action = expect_action(name) or name
        via: dict[str, set[str]] = {}
        for copy in alive:
            assert copy.live is not None
            for path in who_can(live_policy(copy.live), live_grants(copy.live), session.principals,
                                key_facts(copy.live), [action]):
                where = f" in {copy.region}" if len(alive) > 1 else ""
                via.setdefault(path.principal, set()).add(f"{path.layer} {path.source}{where}")
        too_many = sorted(set(via) - set(wanted))
        too_few = sorted(set(wanted) - set(via))
        if not too_many and not too_few:
            who = ", ".join(sorted(via)) or "nobody"
            out.append(Check(home.address, home.region, "access", True,
                             f"exactly the expected principals can {action} ({regions}): {who}", action))
            continue
        problems = [f"too many: {p} (via {', '.join(sorted(via[p]))})" for p in too_many]
        problems += [f"too few: {p} cannot" + ("" if session.registered(p) else " (not a registered principal)")
                     for p in too_few]
        out.append(Check(home.address, home.region, "access", False,
                         f"{action} ({regions}): " + "; ".join(problems), action))
    return out


def context_required_check(session: Session, copy: Copy) -> Check | None:
    """Where the declared policy or grants admit a principal only under an encryption context,
    the live policy and grants still do; None when the stack requires no context of anyone."""
    live, key = copy.live, copy.desired.key
    if live is None or live.pending_deletion or key.spec != "SYMMETRIC_DEFAULT":
        return None
    decl = copy.desired.decl
    text = decl.policy.text if decl.policy else default_policy(session.backend.account)
    facts = key_facts(live)
    wanted = requirements(parse_policy_cached(text), declared_grants(decl.grants), session.principals, facts)
    if not wanted:
        return None
    failing: dict[tuple[str, str, str], list[str]] = {}
    for req in wanted:
        how = broken(req, session.registered(req.principal), facts, live_policy(live), live_grants(live))
        if how is not None:
            failing.setdefault((req.principal, *how), []).append(req.action)
    if failing:
        return Check(copy.address, copy.region, "context-required", False, "; ".join(
            f"{who} {before} {', '.join(actions)} {after}" for (who, before, after), actions in failing.items()))
    grouped: dict[tuple[str, str], list[str]] = {}
    for req in wanted:
        grouped.setdefault((req.principal, format_context(req.pairs)), []).append(req.action)
    shown = "; ".join(f"{who}: {', '.join(actions)} only with {context}"
                      for (who, context), actions in sorted(grouped.items()))
    return Check(copy.address, copy.region, "context-required", True,
                 f"the live policy and grants still require the declared context: {shown}")
