"""Reading the live store: every key a stack owns, through the KMS API only.

The planner only reads (STYLE 3): this module takes KMS clients (one per region, ours or boto3's)
and returns immutable snapshots. Ownership comes from the tags the reconciler writes, so there is
no state file: `kmsplan:stack` names the stack, `kmsplan:address` the key's address, and
`kmsplan:protect` carries deletion protection even after the key leaves the YAML.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime

import orjson

from kmsplan.errors import KMSError

STACK_TAG = "kmsplan:stack"
ADDRESS_TAG = "kmsplan:address"
PROTECT_TAG = "kmsplan:protect"
WINDOW_TAG = "kmsplan:deletion-window-days"
MANAGED_TAGS = (STACK_TAG, ADDRESS_TAG, PROTECT_TAG, WINDOW_TAG)
DEFAULT_WINDOW = 30
RESERVED_ALIASES = "alias/kmsplan/"  # the reconciler's own: plan signing, apply locks

_ADDRESS = re.compile(r"^key\.([A-Za-z0-9][A-Za-z0-9_-]*)(?:\.replica\[([a-z0-9-]+)\])?\Z")


def parse_address(address: str) -> tuple[str, str | None] | None:
    """`key.NAME` -> (NAME, None); `key.NAME.replica[REGION]` -> (NAME, REGION); else None."""
    match = _ADDRESS.match(address)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class LiveGrant:
    grant_id: str
    name: str | None
    grantee: str
    operations: tuple[str, ...]
    constraints: Mapping[str, Mapping[str, str]] | None
    retiring_principal: str | None


@dataclass(frozen=True)
class LiveKey:
    """One key in one region, as the store reports it."""

    key_id: str
    region: str
    arn: str
    spec: str
    usage: str
    origin: str
    multi_region: bool
    multi_region_type: str | None
    primary_region: str | None
    description: str
    state: str
    deletion_date: datetime | None
    policy: str
    rotation_enabled: bool | None  # None: the spec has no rotation
    rotation_period: int | None
    tags: Mapping[str, str]
    aliases: tuple[str, ...]
    grants: tuple[LiveGrant, ...]

    @property
    def address(self) -> str | None:
        return self.tags.get(ADDRESS_TAG)

    @property
    def protected(self) -> bool:
        return self.tags.get(PROTECT_TAG) == "true"

    @property
    def pending_deletion(self) -> bool:
        return self.state in ("PendingDeletion", "PendingReplicaDeletion")

    @property
    def deletion_window(self) -> int:
        """The window written by the reconciler (7-30), or AWS's default of 30."""
        value = self.tags.get(WINDOW_TAG, "")
        return int(value) if value.isdigit() and 7 <= int(value) <= 30 else DEFAULT_WINDOW

    @property
    def user_tags(self) -> dict[str, str]:
        """Tags the stack declares (the reconciler's own tags left out)."""
        return {k: v for k, v in self.tags.items() if k not in MANAGED_TAGS}


@dataclass(frozen=True)
class LiveState:
    """What one stack owns across regions, plus every alias of those regions (to spot collisions)."""

    keys: tuple[LiveKey, ...]
    aliases: Mapping[str, Mapping[str, str]]  # region -> alias name -> target key id
    unowned: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # region -> key id -> owner stack

    def fingerprint(self) -> str:
        """SHA-256 of everything read: a saved plan is bound to it, so a moved store makes it stale."""
        owned = {(key.key_id, key.region) for key in self.keys}
        data = {"keys": [_fields(key) for key in self.keys],
                "aliases": {r: {name: target for name, target in a.items() if (target, r) in owned}
                            for r, a in self.aliases.items()}}
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()

    def by_address(self) -> dict[str, list[LiveKey]]:
        found: dict[str, list[LiveKey]] = {}
        for key in self.keys:
            if key.address:
                found.setdefault(key.address, []).append(key)
        return found


def _fields(value: object) -> object:
    """A shallow `asdict` (which deep-copies and dominated the fingerprint of big stacks)."""
    if is_dataclass(value):
        return {f.name: _fields(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_fields(v) for v in value]
    return value


def _paged(call: Callable[..., dict], field_name: str, **params) -> list[dict]:
    items, marker = [], None
    while True:
        response = call(**params, **({"Marker": marker} if marker else {}))
        items += response.get(field_name, [])
        if not response.get("Truncated"):
            return items
        marker = response["NextMarker"]


def read_live(clients: Mapping[str, object], stack: str) -> LiveState:
    """Read every key tagged for `stack` in each region's client, with policy, rotation, aliases, grants."""
    keys: list[LiveKey] = []
    aliases: dict[str, dict[str, str]] = {}
    for region, kms in sorted(clients.items()):
        region_aliases = _paged(kms.list_aliases, "Aliases", Limit=1000)
        aliases[region] = {a["AliasName"]: a["TargetKeyId"] for a in region_aliases
                           if a.get("TargetKeyId") and not a["AliasName"].startswith(RESERVED_ALIASES)}
        by_key: dict[str, list[str]] = {}
        for name, target in aliases[region].items():
            by_key.setdefault(target, []).append(name)
        for entry in _paged(kms.list_keys, "Keys", Limit=1000):
            try:
                tags = {t["TagKey"]: t["TagValue"]
                        for t in _paged(kms.list_resource_tags, "Tags", KeyId=entry["KeyId"])}
            except KMSError as error:
                # a key whose policy shuts this principal out (another team's, say) cannot be
                # shown to be ours, and one such key must not stop every plan in the region
                if error.code == "AccessDeniedException":
                    continue
                raise
            if tags.get(STACK_TAG) != stack:
                continue
            keys.append(_read_key(kms, region, entry["KeyId"], tags, tuple(sorted(by_key.get(entry["KeyId"], [])))))
    keys.sort(key=lambda k: (k.address or "", k.region, k.key_id))
    return LiveState(tuple(keys), aliases)


def read_key(kms, region: str, key_id: str) -> LiveKey:
    """One key afresh (apply re-checks each step's precondition with it)."""
    tags = {t["TagKey"]: t["TagValue"] for t in _paged(kms.list_resource_tags, "Tags", KeyId=key_id)}
    return _read_key(kms, region, key_id, tags, ())


def _read_key(kms, region: str, key_id: str, tags: dict[str, str], key_aliases: tuple[str, ...]) -> LiveKey:
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    mrc = meta.get("MultiRegionConfiguration") or {}
    rotation_enabled = rotation_period = None
    if meta["KeySpec"] == "SYMMETRIC_DEFAULT":
        status = kms.get_key_rotation_status(KeyId=key_id)
        rotation_enabled, rotation_period = status["KeyRotationEnabled"], status.get("RotationPeriodInDays")
    grants = tuple(
        LiveGrant(g["GrantId"], g.get("Name"), g["GranteePrincipal"], tuple(sorted(g["Operations"])),
                  g.get("Constraints") or None, g.get("RetiringPrincipal"))
        for g in _paged(kms.list_grants, "Grants", KeyId=key_id)
    )
    return LiveKey(
        key_id=key_id, region=region, arn=meta["Arn"], spec=meta["KeySpec"], usage=meta["KeyUsage"],
        origin=meta.get("Origin", "AWS_KMS"), multi_region=meta.get("MultiRegion", False),
        multi_region_type=mrc.get("MultiRegionKeyType"),
        primary_region=(mrc.get("PrimaryKey") or {}).get("Region"), description=meta.get("Description", ""),
        state=meta["KeyState"], deletion_date=meta.get("DeletionDate"),
        policy=kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"],
        rotation_enabled=rotation_enabled, rotation_period=rotation_period, tags=tags, aliases=key_aliases,
        grants=tuple(sorted(grants, key=lambda g: (g.name or "", g.grant_id))),
    )
