"""One verify run's shared state: recorded clients, the verifying principal, the registry."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from kmsplan.plan.backend import Backend
from kmsplan.plan.diff import DesiredCopy
from kmsplan.plan.guards import policy_grants  # LiveGrant -> policy Grant, as the guards see them
from kmsplan.plan.live import LiveKey
from kmsplan.policy import Decision, Grant, Policy, Principal, parse_policy_cached
from kmsplan.verify.contexts import decide, key_facts
from kmsplan.verify.recorder import Call, RecordingClient


@dataclass(frozen=True)
class Copy:
    """A declared copy of a key (the key in its region, or a replica) and what is live for it."""

    desired: DesiredCopy
    live: LiveKey | None

    @property
    def address(self) -> str:
        return self.desired.address

    @property
    def region(self) -> str:
        return self.desired.region

    @property
    def usable(self) -> bool:
        """Live, not pending deletion, enabled: cryptography can be asked of it."""
        return self.live is not None and self.live.state == "Enabled"


@dataclass
class Session:
    """What every check of one run reads: clients that record each call, and who is asking."""

    backend: Backend
    principal: Principal
    principals: list[Principal]
    calls: list[Call] = field(default_factory=list)
    run: str = field(default_factory=lambda: secrets.token_hex(8))
    _clients: dict[str, RecordingClient] = field(default_factory=dict)

    @property
    def regions(self) -> tuple[str, ...]:
        return self.backend.regions

    def client(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = RecordingClient(self.backend.client(region), region, self.calls)
        return self._clients[region]

    def clients(self) -> dict[str, Any]:
        return {region: self.client(region) for region in self.regions}

    def registered(self, arn: str) -> Principal | None:
        return next((p for p in self.principals if p.arn == arn), None)

    def decide(self, key: LiveKey, action: str, params: dict[str, Any]) -> Decision:
        """Would the store let the verifying principal make this call on `key`?"""
        return decide(self.principal, key_facts(key), live_policy(key), live_grants(key), action, params)


def live_policy(key: LiveKey) -> Policy:
    return parse_policy_cached(key.policy)


def live_grants(key: LiveKey) -> list[Grant]:
    return policy_grants(key)
