"""What every operation handler shares: the registry, the `Call` it receives, key resolution and
the key-state rules of AWS KMS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from kmsplan.errors import KMSError
from kmsplan.policy import KeyFacts, Principal
from kmsplan.store.authz import request_attributes
from kmsplan.store.keystore import KeyStore, KeyView

_KEY_ID = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})\Z")
_KEY_ARN = re.compile(r"^arn:aws:kms:([a-z0-9-]+):(\d{12}):(key|alias)/(.+)\Z")

# Key states in which an operation category may run, and the error every other state gets.
CRYPTO, MANAGE, ANY, PENDING = "crypto", "manage", "any", "pending"
_PENDING_STATES = ("PendingDeletion", "PendingReplicaDeletion")


@dataclass(frozen=True)
class Operation:
    name: str
    handler: Callable[["Call"], dict]
    required: tuple[str, ...]
    allowed: frozenset[str]


OPERATIONS: dict[str, Operation] = {}


def operation(name: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()):
    """Register a handler for the AWS KMS operation `name` with its parameter names."""

    def register(handler: Callable[["Call"], dict]) -> Callable[["Call"], dict]:
        OPERATIONS[name] = Operation(name, handler, required, frozenset(required + optional))
        return handler

    return register


@dataclass
class Call:
    """One request in flight: who asks, where, with what; handlers add the keys they touch."""

    store: KeyStore
    region: str
    principal: str
    operation: str
    params: dict
    via_service: str | None = None
    resources: list[str] = field(default_factory=list)
    caller: Principal | None = None

    @property
    def account(self) -> str:
        return self.store.config.account

    def now_ts(self) -> float:
        return self.store.now().timestamp()

    def act(self) -> None:
        """The point of no return: every check of the request has passed and what follows is the
        operation itself (a token operation, a metadata change, a response). Each handler of an
        operation that takes `DryRun` calls this once, after its last check: a dry run stops here
        with DryRunOperationException (as AWS KMS does), so it reports the first check that fails
        or that the request would succeed, and never uses the token or changes anything."""
        if self.params.get("DryRun"):
            raise KMSError("DryRunOperationException",
                           "The request would have succeeded, but the DryRun option is set.")

    def key(self, param: str = "KeyId", *, state: str = MANAGE, allow_alias: bool = True,
            action: str | None = None, context_param: str = "EncryptionContext", authorize: bool = True) -> KeyView:
        """Resolve a key id, key ARN, alias name or alias ARN; authorize the call on it (as AWS
        does, before looking at its state); then check the key's state for `state`."""
        reference = self.params[param]
        view = resolve(self.store, self.region, reference, allow_alias=allow_alias)
        self.resources.append(view.record.arn)
        if authorize:
            alias = reference if reference.startswith("alias/") else \
                "alias/" + reference.split(":alias/", 1)[1] if ":alias/" in reference else None
            self.authorize(view, action, context=self.params.get(context_param, {}), request_alias=alias)
        check_state(view, state)
        return view

    def authorize(self, view: KeyView, action: str | None = None, *, context: dict | None = None,
                  request_alias: str | None = None) -> None:
        """Key policy, IAM and grants decide; AccessDeniedException when they say no."""
        action = action or f"kms:{self.operation}"
        self.store.authz.check(self.caller, view, action, context or {},
                               request_attributes(self.params, self.via_service, request_alias, action))

    def authorize_identity(self, facts: KeyFacts | None = None, action: str | None = None) -> None:
        """For calls on no existing key (CreateKey, ListKeys, ...): the caller's IAM policies decide."""
        facts = facts or KeyFacts(arn="*", key_id="*", account=self.account, region=self.region)
        self.store.authz.check_identity(self.caller, action or f"kms:{self.operation}", facts,
                                        request_attributes(self.params, self.via_service, None))


def resolve(store: KeyStore, region: str, reference: str, *, allow_alias: bool = True) -> KeyView:
    """Find the key a KeyId parameter names, in `region`; NotFoundException otherwise (as AWS)."""
    key_id = reference
    match = _KEY_ARN.match(reference)
    if match:
        arn_region, account, kind, rest = match.groups()
        if arn_region != region or account != store.config.account:
            raise KMSError("NotFoundException", f"Key '{reference}' does not exist")
        key_id = rest if kind == "key" else f"alias/{rest}"
    elif reference.startswith("arn:"):
        raise KMSError("NotFoundException", f"Invalid arn {reference!r}")
    if key_id.startswith("alias/"):
        if not allow_alias:
            raise KMSError("NotFoundException", f"Alias {key_id!r} cannot be used here: give a key id or key ARN")
        target = store.meta.alias_target(region, key_id)
        if target is None:
            raise KMSError("NotFoundException", f"Alias arn:aws:kms:{region}:{store.config.account}:{key_id} is "
                                                "not found.")
        key_id = target
    elif not _KEY_ID.match(key_id):
        raise KMSError("NotFoundException", f"Invalid keyId '{reference}'")
    view = store.view(region, key_id)
    if view is None:
        raise KMSError("NotFoundException",
                       f"Key 'arn:aws:kms:{region}:{store.config.account}:key/{key_id}' does not exist")
    return view


def check_state(view: KeyView, category: str) -> None:
    """AWS's key-state table, reduced to four categories of operation."""
    state, arn = view.record.state, view.record.arn
    if category == ANY:
        return
    if category == PENDING:
        if state not in _PENDING_STATES:
            raise KMSError("KMSInvalidStateException", f"{arn} is {state} and is not pending deletion.")
        return
    if state in _PENDING_STATES:
        raise KMSError("KMSInvalidStateException", f"{arn} is pending deletion.")
    if state != "Enabled" and state != "Disabled":
        raise KMSError("KMSInvalidStateException", f"{arn} is {state}.")
    if category == CRYPTO and state == "Disabled":
        raise KMSError("DisabledException", f"{arn} is disabled.")


def page_limit(params: dict) -> int:
    """A list operation's Limit: 1-1000, default 100."""
    from kmsplan.store.params import in_range

    return in_range("Limit", params.get("Limit", 100), 1, 1000)


def page(items: list, params: dict, marker_of: Callable[[object], str]) -> tuple[list, dict]:
    """AWS pagination: Limit (1-1000, default 100) and an opaque Marker."""
    limit = page_limit(params)
    start = 0
    if "Marker" in params:
        markers = [marker_of(item) for item in items]
        if params["Marker"] not in markers:
            raise KMSError("InvalidMarkerException", "The request was rejected because the marker is not valid")
        start = markers.index(params["Marker"])
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    extra = {"Truncated": more}
    if more:
        extra["NextMarker"] = marker_of(items[start + limit])
    return chunk, extra
