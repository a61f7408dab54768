"""The typed stack: what validation hands the planner, and the only thing the planner reads.

Everything is frozen and fully resolved: interpolation done, defaults applied, policies parsed,
collections sorted, so two loads of the same YAML compare equal and a plan can diff by address
(`key.<name>`, `key.<name>.replica[<region>]`, `alias[<region>].<alias name>`,
`grant.<key>.<grant>`, `grant.<key>.replica[<region>].<grant>`). `source` fields say where a
declaration came from, for messages; they take no part in equality.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Generic, TypeVar

from kmsplan.policy import Policy

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V], Generic[K, V]):
    """An immutable, hashable mapping with sorted keys; equal to any mapping with the same
    items, so `key.tags == {"env": "prod"}` reads naturally."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        data = dict(items)
        self._data: dict[K, V] = dict(sorted(data.items()))  # type: ignore[type-var]
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


EMPTY: FrozenMap[str, str] = FrozenMap()


@dataclass(frozen=True)
class Source:
    """Where a declaration is written: file, 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


_NOWHERE = Source("", 0, 0)


@dataclass(frozen=True)
class KeyPolicy:
    """A key policy: the parsed `Policy` and its canonical JSON text (what is sent to KMS)."""

    document: Policy
    text: str


@dataclass(frozen=True)
class Rotation:
    """Automatic rotation; `period_days` is None when rotation is off."""

    enabled: bool
    period_days: int | None


@dataclass(frozen=True)
class AliasDecl:
    name: str
    region: str
    target: str  # address of the key or replica the alias points at
    address: str
    source: Source = field(default=_NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class GrantConstraints:
    encryption_context_equals: FrozenMap[str, str] | None = None
    encryption_context_subset: FrozenMap[str, str] | None = None


@dataclass(frozen=True)
class GrantDecl:
    name: str
    key: str  # the key's logical name
    region: str  # the grant lives on the key (or replica) in this region
    address: str
    grantee: str
    operations: tuple[str, ...]  # sorted
    constraints: GrantConstraints | None
    retiring_principal: str | None
    source: Source = field(default=_NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class ReplicaDecl:
    """A multi-Region replica. Description, enabled, policy, tags, deletion window and the
    lockout-check bypass default to the primary key's; aliases and grants are its own."""

    key: str
    region: str
    address: str
    description: str
    enabled: bool
    policy: KeyPolicy | None
    bypass_policy_lockout_safety_check: bool
    aliases: tuple[AliasDecl, ...]
    tags: FrozenMap[str, str]
    grants: tuple[GrantDecl, ...]
    deletion_window_days: int
    source: Source = field(default=_NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class KeySpecDecl:
    """One key as declared, resolved. `region` is its home (primary) region; `policy` None
    means the AWS default key policy."""

    name: str
    address: str
    region: str
    description: str
    spec: str
    usage: str
    multi_region: bool
    enabled: bool
    rotation: Rotation
    deletion_window_days: int
    protect: bool
    aliases: tuple[AliasDecl, ...]
    tags: FrozenMap[str, str]
    policy: KeyPolicy | None
    bypass_policy_lockout_safety_check: bool
    grants: tuple[GrantDecl, ...]
    replicas: tuple[ReplicaDecl, ...]  # sorted by region
    expect: FrozenMap[str, tuple[str, ...]]
    source: Source = field(default=_NOWHERE, compare=False, repr=False)

    def replica(self, region: str) -> ReplicaDecl | None:
        return next((r for r in self.replicas if r.region == region), None)


@dataclass(frozen=True)
class Stack:
    name: str
    account: str
    region: str
    version: int
    keys: tuple[KeySpecDecl, ...]  # sorted by name
    files: tuple[str, ...] = field(compare=False)  # where it was read from, like `source`
    vars: FrozenMap[str, str] = EMPTY

    def key(self, name: str) -> KeySpecDecl | None:
        return next((k for k in self.keys if k.name == name), None)

    @property
    def aliases(self) -> tuple[AliasDecl, ...]:
        """Every alias of every key and replica, sorted by address."""
        found = [a for k in self.keys for a in k.aliases]
        found += [a for k in self.keys for r in k.replicas for a in r.aliases]
        return tuple(sorted(found, key=lambda a: a.address))

    def resources(self) -> dict[str, KeySpecDecl | ReplicaDecl | AliasDecl | GrantDecl]:
        """Every addressable declaration by address, in address order."""
        out: dict[str, Any] = {}
        for key in self.keys:
            out[key.address] = key
            for grant in key.grants:
                out[grant.address] = grant
            for replica in key.replicas:
                out[replica.address] = replica
                for grant in replica.grants:
                    out[grant.address] = grant
        for alias in self.aliases:
            out[alias.address] = alias
        return dict(sorted(out.items()))


def to_data(value: Any) -> Any:
    """Plain JSON-ready data for any model value (policies as their JSON document)."""
    if isinstance(value, KeyPolicy):
        return json.loads(value.text)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in fields(value)
                if f.compare}
    if isinstance(value, Mapping):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_data(v) for v in value]
    return value
