"""The meaning of one key: semantic rules, defaults and interpolation, compiled into the model.

Runs after the schema, on structurally valid parts only: a field whose subtree the schema
rejected (`Unit.bad`) is skipped, so one wrong type gives one finding, not a cascade.
"""

from __future__ import annotations

import os
import re
from typing import Any

from kmsplan.stack import specs
from kmsplan.stack.actions import expect_action, keyless_action, suggest_action
from kmsplan.stack.context import (
    DEFAULT_PERIOD,
    DEFAULT_WINDOW,
    MAX_CONTEXT_VALUE,
    MAX_TAGS,
    Path,
    Setting,
    StackContext,
    Unit,
    tag_key_problem,
    where_of,
)
from kmsplan.stack.interpolate import interpolate, scope
from kmsplan.stack.loader import Loc, LocDict, LocList
from kmsplan.stack.model import (
    AliasDecl,
    FrozenMap,
    GrantConstraints,
    GrantDecl,
    KeyPolicy,
    KeySpecDecl,
    ReplicaDecl,
    Rotation,
    Source,
)
from kmsplan.stack.policies import PolicyChecker, PolicySource

_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]+$")
_PRINCIPAL = re.compile(
    r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:(root|(user|role|federated-user)/\S+)$"
    r"|^arn:aws(-cn|-us-gov)?:sts::\d{12}:(assumed-role|federated-user)/\S+$"
    r"|^[a-z0-9][a-z0-9.-]*\.amazonaws\.com(\.cn)?$")
#: who `expect:` may name: identities the who-can analysis can report (no service principals)
_IAM_PRINCIPAL = re.compile(
    r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:(root|(user|role)/\S+)$"
    r"|^arn:aws(-cn|-us-gov)?:sts::\d{12}:assumed-role/\S+$")


class KeyBuilder:
    """Checks one key (and its replicas, grants, aliases, tags, policies) and builds it."""

    def __init__(self, ctx: StackContext, unit: Unit, name: str, raw: LocDict,
                 source: Source) -> None:
        self.ctx = ctx
        self.unit = unit
        self.name = name
        self.raw = raw
        self.source = source
        self.path: Path = ("keys", name)
        self.address = f"key.{name}"
        self.policies = PolicyChecker(ctx.account, ctx.report)

    # --- small helpers --------------------------------------------------------------------

    def here(self, loc: Loc, code: str, message: str) -> None:
        self.ctx.report(self.unit.file, loc, code, message)

    def get(self, owner: LocDict, path: Path, name: str, default: Any = None) -> Any:
        if name in owner and not self.unit.bad(path + (name,)):
            return owner[name]
        return default

    def container(self, owner: LocDict, path: Path, name: str) -> Any:
        """A mapping or list field, usable even when some of its entries are not: callers
        skip the entries `bad` reports."""
        value = owner.get(name)
        if isinstance(value, (dict, list)) and path + (name,) not in self.unit.errors:
            return value
        return None

    def setting(self, name: str, builtin: Any) -> Any:
        value = self.get(self.raw, self.path, name)
        if value is not None:
            return value
        default = self.ctx.defaults.get(name)
        return builtin if default is None else default.value

    def text(self, value: str, names: dict[str, str], file: str, loc: Loc, where: str) -> str:
        if "$" not in value:
            return value
        result, problems = interpolate(value, names)
        for code, message in problems:
            self.ctx.report(file, loc, code, f"{where}: {message}")
        return result

    # --- the key --------------------------------------------------------------------------

    def build(self) -> KeySpecDecl:
        raw, path, where = self.raw, self.path, where_of(self.path)
        region = self.get(raw, path, "region", self.ctx.region)
        spec, usage, family = self.spec_and_usage()
        names = scope(self.ctx.account, self.ctx.name, region, self.ctx.variables)
        multi_region = bool(self.setting("multi_region", False))
        enabled = self.get(raw, path, "enabled", True)
        description = self.text(self.get(raw, path, "description", ""), names, self.unit.file,
                                raw.value_loc("description"), f"{where}.description")
        rotation = self.rotation(spec, usage, family is not None)
        window = self.setting("deletion_window_days", DEFAULT_WINDOW)
        bypass = self.bypass(raw, path)
        policy_source = self.policy_source(raw, path)
        policy = self.policy(policy_source, names, path)
        tag_sources = self.tag_sources(raw, path, dict(self.ctx.default_tags))
        replicas = self.replicas(region, multi_region, family, enabled, window, bypass,
                                 policy_source, tag_sources)
        return KeySpecDecl(
            name=self.name, address=self.address, region=region, description=description,
            spec=spec, usage=usage or "", multi_region=multi_region, enabled=enabled,
            rotation=rotation, deletion_window_days=window,
            protect=bool(self.setting("protect", False)),
            aliases=self.aliases(raw, path, region, self.address, names),
            tags=self.tags(tag_sources, names, raw, path), policy=policy,
            bypass_policy_lockout_safety_check=bypass,
            grants=self.grants(raw, path, region, names, family, f"grant.{self.name}."),
            replicas=replicas, expect=self.expect(names), source=self.source)

    def spec_and_usage(self) -> tuple[str, str | None, str | None]:
        """(spec, usage, family); family is None when the pair is unusable for later rules."""
        raw, path = self.raw, self.path
        if self.unit.bad(path + ("spec",)) or self.unit.bad(path + ("usage",)):
            return specs.SYMMETRIC_DEFAULT, None, None
        spec = raw.get("spec", specs.SYMMETRIC_DEFAULT)
        usage = raw.get("usage") or specs.default_usage(spec)
        allowed = specs.USAGES[spec]
        if usage is None:
            self.here(raw.value_loc("spec"), "E401",
                      f"{where_of(path)}: {spec} keys need a usage, and it cannot change later: "
                      f"add 'usage: ENCRYPT_DECRYPT' or 'usage: SIGN_VERIFY'")
            return spec, None, None
        if usage not in allowed:
            self.here(raw.value_loc("usage"), "E400",
                      f"{where_of(path)}.usage: {spec} keys cannot have usage {usage}; "
                      f"{spec} allows {' or '.join(allowed)}")
            return spec, usage, None
        return spec, usage, specs.family(spec, usage)

    def rotation(self, spec: str, usage: str | None, known: bool) -> Rotation:
        raw, path = self.raw, self.path
        declared = self.get(raw, path, "rotation")
        if not known:
            return Rotation(False, None)
        if not specs.rotatable(spec, usage or ""):
            if isinstance(declared, LocDict) and (declared.get("enabled") is True
                                                  or "period_days" in declared):
                self.here(raw.value_loc("rotation"), "E402",
                          f"{where_of(path)}.rotation: only symmetric ENCRYPT_DECRYPT keys "
                          f"rotate automatically, not {spec}/{usage}; remove 'rotation'")
            return Rotation(False, None)
        declared = declared if isinstance(declared, LocDict) else LocDict()
        enabled_at = self.ctx.defaults.get("rotation.enabled")
        if "enabled" in declared:
            enabled = declared["enabled"]
            enabled_at = Setting(enabled, self.unit.file, declared.value_loc("enabled"),
                                 f"{where_of(path)}.rotation.enabled")
        else:
            enabled = True if enabled_at is None else enabled_at.value
        if not enabled and enabled_at is not None:
            self.ctx.report(enabled_at.file, enabled_at.loc, "W400",
                            f"{enabled_at.where}: automatic rotation is off for a symmetric "
                            "encryption key; rotating yearly (or period_days) limits how much "
                            "data one key version protects")
        if not enabled:
            return Rotation(False, None)
        period = declared.get("period_days")
        if period is None:
            default = self.ctx.defaults.get("rotation.period_days")
            period = DEFAULT_PERIOD if default is None else default.value
        return Rotation(True, period)

    def bypass(self, owner: LocDict, path: Path, inherited: bool = False) -> bool:
        value = self.get(owner, path, "bypass_policy_lockout_safety_check")
        if value is True:
            self.here(owner.value_loc("bypass_policy_lockout_safety_check"), "W702",
                      f"{where_of(path)}.bypass_policy_lockout_safety_check: true skips AWS's "
                      "check that the policy still lets its author manage the key; a mistake "
                      "can make the key unmanageable")
        return inherited if value is None else value

    # --- policies -------------------------------------------------------------------------

    def policy_source(self, owner: LocDict, path: Path) -> tuple[PolicySource, str, Loc] | None:
        inline = "policy" in owner and not self.unit.bad(path + ("policy",))
        from_file = "policy_file" in owner and not self.unit.bad(path + ("policy_file",))
        if inline and from_file:
            self.here(owner.key_loc("policy_file"), "E702",
                      f"{where_of(path)}: set either 'policy' or 'policy_file', not both")
            return None
        if inline:
            return (PolicySource(owner["policy"], self.unit.file, True, owner.value_loc("policy"),
                                 []), f"{where_of(path)}.policy", owner.key_loc("policy"))
        if not from_file:
            return None
        reference = owner["policy_file"]
        real = os.path.normpath(os.path.join(os.path.dirname(self.unit.path), reference))
        display = os.path.normpath(os.path.join(os.path.dirname(self.unit.file), reference))
        loaded = self.ctx.policy_files.load(real, display, self.ctx.report, self.unit.file,
                                            owner.value_loc("policy_file"))
        if loaded.tree is None:
            return None
        where = "" if loaded.located else f"{where_of(path)}.policy_file ({reference})"
        return loaded, where, owner.value_loc("policy_file")

    def policy(self, found: tuple[PolicySource, str, Loc] | None, names: dict[str, str],
               path: Path) -> KeyPolicy | None:
        """The checked policy; `path` names its owner (the key, or the replica that has its
        own policy) in W701."""
        if found is None:
            return None
        source, where, loc = found
        return self.policies.check(source, names, where, where_of(path), (self.unit.file, loc))

    # --- aliases, tags, grants, expect ----------------------------------------------------

    def aliases(self, owner: LocDict, path: Path, region: str, target: str,
                names: dict[str, str]) -> tuple[AliasDecl, ...]:
        items = self.container(owner, path, "aliases") or LocList()
        out: list[AliasDecl] = []
        for i, value in enumerate(items):
            if self.unit.bad(path + ("aliases", i)):
                continue
            loc = items.value_loc(i)
            where = f"{where_of(path)}.aliases[{i}]"
            name = self.text(value, names, self.unit.file, loc, where)
            if not (_ALIAS.match(name) and len(name) <= 256):
                self.here(loc, "E500", f"{where}: {name!r} is not an alias name: 'alias/' then "
                                       "letters, digits, '/', '_' or '-', 256 characters at most")
            elif name.lower().startswith("alias/aws/"):
                self.here(loc, "E501", f"{where}: {name!r} is in alias/aws/, which AWS reserves "
                                       "for AWS managed keys")
            elif name.startswith("alias/kmsplan/"):
                self.here(loc, "E501", f"{where}: {name!r} is in alias/kmsplan/, which kmsplan reserves "
                                       "for its apply locks and plan-signing key; choose another name")
            else:
                out.append(AliasDecl(name, region, target, f"alias[{region}].{name}",
                                     Source(self.unit.file, *loc)))
        return tuple(out)

    def tag_sources(self, owner: LocDict, path: Path,
                    inherited: dict[str, Setting]) -> dict[str, Setting]:
        """The tags before interpolation, each with where it was written; own tags win."""
        tags = self.container(owner, path, "tags")
        merged = dict(inherited)
        for tag, value in (tags or {}).items():
            if self.unit.bad(path + ("tags", tag)):
                continue
            where = f"{where_of(path)}.tags.{tag}"
            problem = tag_key_problem(tag)
            if problem is not None:
                self.here(tags.key_loc(tag), problem[0], f"{where}: {problem[1]}")
            else:
                merged[tag] = Setting(value, self.unit.file, tags.value_loc(tag), where)
        return merged

    def tags(self, sources: dict[str, Setting], names: dict[str, str], owner: LocDict,
             path: Path) -> FrozenMap[str, str]:
        out: dict[str, str] = {}
        for tag, setting in sources.items():
            value = self.text(setting.value, names, setting.file, setting.loc, setting.where)
            if len(value) > 256:
                self.ctx.report(setting.file, setting.loc, "E504",
                                f"{setting.where}: tag value is {len(value)} characters; "
                                "the limit is 256")
            out[tag] = value
        if len(out) > MAX_TAGS:
            loc = owner.key_loc("tags") if "tags" in owner else (owner.line, owner.col)
            self.here(loc, "E505", f"{where_of(path)}: {len(out)} tags (defaults included); "
                                   f"a KMS key has at most {MAX_TAGS}")
        return FrozenMap(out)

    def principal(self, owner: LocDict, name: str, names: dict[str, str], where: str) -> str:
        loc = owner.value_loc(name)
        value = self.text(owner[name], names, self.unit.file, loc, f"{where}.{name}")
        if "${" not in value and not _PRINCIPAL.match(value):
            self.here(loc, "E604", f"{where}.{name}: {value!r} is not an AWS principal; use an "
                                   "ARN such as 'arn:aws:iam::111122223333:role/name' or a "
                                   "service principal such as 'ec2.amazonaws.com'")
        return value

    def grants(self, owner: LocDict, path: Path, region: str, names: dict[str, str],
               family: str | None, prefix: str) -> tuple[GrantDecl, ...]:
        grants = self.container(owner, path, "grants") or LocDict()
        out: list[GrantDecl] = []
        for name, raw in grants.items():
            gpath = path + ("grants", name)
            if self.unit.bad(gpath) or not isinstance(raw, LocDict):
                continue
            where = where_of(gpath)
            grantee = self.principal(raw, "grantee", names, where)
            operations = raw["operations"]
            if family is not None:
                allowed = specs.OPERATIONS[family]
                for i, operation in enumerate(operations):
                    if operation not in allowed:
                        self.here(operations.value_loc(i), "E600",
                                  f"{where}.operations[{i}]: {operation} is not a grant operation "
                                  f"for {specs.FAMILY_NAMES[family]} keys; allowed: "
                                  f"{', '.join(sorted(allowed))}")
            constraints = self.constraints(raw, where, names, family, operations)
            retiring = (self.principal(raw, "retiring_principal", names, where)
                        if "retiring_principal" in raw else None)
            out.append(GrantDecl(name, self.name, region, prefix + name, grantee,
                                 tuple(sorted(operations)), constraints, retiring,
                                 Source(self.unit.file, *grants.key_loc(name))))
        return tuple(out)

    def constraints(self, grant: LocDict, where: str, names: dict[str, str],
                    family: str | None, operations: list[str]) -> GrantConstraints | None:
        raw = grant.get("constraints")
        if not isinstance(raw, LocDict):
            return None
        loc = grant.key_loc("constraints")
        if family is not None and family != "symmetric":
            self.here(loc, "E601", f"{where}.constraints: encryption context constraints need "
                                   f"a symmetric encryption key; {specs.FAMILY_NAMES[family]} "
                                   "keys take no encryption context")
        elif not any(op in specs.CONTEXT_OPS for op in operations):
            self.here(loc, "E602", f"{where}.constraints: none of {', '.join(operations)} takes "
                                   "an encryption context, so the constraint would never apply")
        kinds: dict[str, FrozenMap[str, str]] = {}
        for kind in ("encryption_context_equals", "encryption_context_subset"):
            pairs = raw.get(kind)
            if not isinstance(pairs, LocDict):
                continue  # absent, or an unknown field (reported by the schema)
            values = {}
            for context_key, value in pairs.items():
                spot = f"{where}.constraints.{kind}.{context_key}"
                value = self.text(value, names, self.unit.file, pairs.value_loc(context_key), spot)
                if len(value) > MAX_CONTEXT_VALUE:
                    self.here(pairs.value_loc(context_key), "E603",
                              f"{spot}: {len(value)} characters; a constraint value has at most "
                              f"{MAX_CONTEXT_VALUE}")
                values[context_key] = value
            kinds[kind] = FrozenMap(values)
        return GrantConstraints(kinds.get("encryption_context_equals"),
                                kinds.get("encryption_context_subset"))

    def expect(self, names: dict[str, str]) -> FrozenMap[str, tuple[str, ...]]:
        """Expected principals per action, keyed as written. An unknown action (E203), two
        spellings of one action (E204) and a principal that is no IAM principal ARN (E204) are
        reported here, so `kmsplan verify` never meets an expectation it cannot check."""
        raw = self.container(self.raw, self.path, "expect") or {}
        out = {}
        seen: dict[str, str] = {}
        for action, principals in raw.items():
            if self.unit.bad(self.path + ("expect", action)):
                continue
            where = f"{where_of(self.path)}.expect.{action}"
            meant = expect_action(action)
            if meant is None and keyless_action(action):
                self.here(raw.key_loc(action), "E203",
                          f"{where}: {keyless_action(action)} acts on no key, so no key's policy "
                          "decides who may call it; expect only actions on the key")
            elif meant is None:
                close = suggest_action(action)
                hint = f"; did you mean '{close}'?" if close else \
                    " (write the action in snake_case, e.g. 'decrypt', or as 'kms:Decrypt')"
                self.here(raw.key_loc(action), "E203",
                          f"{where}: '{action}' is not a KMS action on a key{hint}")
            elif meant in seen:
                self.here(raw.key_loc(action), "E204",
                          f"{where}: '{seen[meant]}' and '{action}' both name {meant}; keep one")
            else:
                seen[meant] = action
            values = []
            for i, principal in enumerate(principals):
                value = self.text(principal, names, self.unit.file, principals.value_loc(i), where)
                if "${" not in value and not _IAM_PRINCIPAL.match(value):
                    self.here(principals.value_loc(i), "E204",
                              f"{where}[{i}]: {value!r} is not an IAM principal ARN "
                              "(arn:aws:iam::ACCOUNT:role/NAME, user/NAME or root)")
                values.append(value)
            out[action] = tuple(sorted(values))
        return FrozenMap(out)

    # --- replicas -------------------------------------------------------------------------

    def replicas(self, region: str, multi_region: bool, family: str | None, enabled: bool,
                 window: int, bypass: bool, policy_source: Any,
                 tag_sources: dict[str, Setting]) -> tuple[ReplicaDecl, ...]:
        raw, path = self.raw, self.path
        replicas = self.container(raw, path, "replicas")
        if not replicas:
            return ()
        if not multi_region:
            self.here(raw.key_loc("replicas"), "E405",
                      f"{where_of(path)}.replicas: only multi-Region keys have replicas; add "
                      "'multi_region: true' (it cannot be changed after the key is created)")
        out = []
        for replica_region in sorted(replicas):
            rpath = path + ("replicas", replica_region)
            loc = replicas.key_loc(replica_region)
            if self.unit.bad(rpath):
                continue
            if replica_region == region:
                self.here(loc, "E406", f"{where_of(rpath)}: {region} is the key's own region; "
                                       "a replica must be in another region")
                continue
            own = replicas[replica_region]
            own = own if isinstance(own, LocDict) else LocDict(*loc)
            names = scope(self.ctx.account, self.ctx.name, replica_region, self.ctx.variables)
            address = f"{self.address}.replica[{replica_region}]"
            description = self.get(own, rpath, "description")
            if description is None:
                description = self.get(raw, path, "description", "")
                desc_owner, desc_path = raw, path
            else:
                desc_owner, desc_path = own, rpath
            description = self.text(description, names, self.unit.file,
                                    desc_owner.value_loc("description"),
                                    f"{where_of(desc_path)}.description")
            own_policy = "policy" in own or "policy_file" in own
            found = self.policy_source(own, rpath) if own_policy else policy_source
            policy_path = rpath if own_policy else path
            out.append(ReplicaDecl(
                key=self.name, region=replica_region, address=address, description=description,
                enabled=self.get(own, rpath, "enabled", enabled),
                policy=self.policy(found, names, policy_path),
                bypass_policy_lockout_safety_check=self.bypass(own, rpath, bypass),
                aliases=self.aliases(own, rpath, replica_region, address, names),
                tags=self.tags(self.tag_sources(own, rpath, tag_sources), names, own, rpath),
                grants=self.grants(own, rpath, replica_region, names, family,
                                   f"grant.{self.name}.replica[{replica_region}]."),
                deletion_window_days=self.get(own, rpath, "deletion_window_days", window),
                source=Source(self.unit.file, *loc)))
        return tuple(out)
