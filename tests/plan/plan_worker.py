"""A store opened in a process of its own, for the reconciler's subprocess tests.

    python plan_worker.py keys STORE STACK              every key tagged for STACK, all regions (JSON)
    python plan_worker.py call STORE REGION OP JSON     one KMS call as the account root; its reply (JSON)
    python plan_worker.py check STORE                   recover, then `store check`'s problems (JSON)
    python plan_worker.py lock STORE STACK PRINCIPAL    take STACK's apply lock, print JSON, hold it
                                                        (never releasing) until stdin closes
    python plan_worker.py apply STORE STACK_FILE DIE_AT plan and apply the stack as the account root,
                                                        SIGKILLing itself just before the DIE_AT-th
                                                        KMS call of the apply (0: never); prints
                                                        the number of calls the apply made

Never imported by pytest: the PKCS#11 library is initialised once per process, so a second
store must live in another process.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
from datetime import datetime

from kmsplan.errors import KMSError
from kmsplan.plan import Flags, LocalBackend, apply_plan, load_valid_stack, plan_stack, signing
from kmsplan.plan.live import STACK_TAG
from kmsplan.store import KeyStore


def _root(store: KeyStore) -> str:
    return f"arn:aws:iam::{store.config.account}:root"


def _all(method, field: str, **params) -> list:
    items, marker = [], None
    while True:
        page = method(**params, **({"Marker": marker} if marker else {}))
        items += page[field]
        if not page.get("Truncated"):
            return items
        marker = page["NextMarker"]


def keys(path: str, stack: str) -> list[dict]:
    store = KeyStore.open(path)
    found = []
    for region in store.config.regions:
        kms = store.client(region=region, principal=_root(store))
        for entry in _all(kms.list_keys, "Keys", Limit=1000):
            try:
                tags = {t["TagKey"]: t["TagValue"] for t in _all(kms.list_resource_tags, "Tags", KeyId=entry["KeyId"])}
            except KMSError:
                continue
            if tags.get(STACK_TAG) != stack:
                continue
            meta = kms.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]
            found.append({"region": region, "key_id": entry["KeyId"], "state": meta["KeyState"],
                          "address": tags.get("kmsplan:address"), "tags": tags})
    return found


def call(path: str, region: str, operation: str, params: str) -> dict:
    store = KeyStore.open(path)
    kms = store.client(region=region, principal=_root(store))
    arguments = json.loads(params)
    if isinstance(arguments.get("Plaintext"), str):
        arguments["Plaintext"] = arguments["Plaintext"].encode()
    reply = getattr(kms, operation)(**arguments)
    return {k: v for k, v in reply.items() if not isinstance(v, bytes)}


def check(path: str) -> list[str]:
    store = KeyStore.open(path)
    store.recover()
    return store.check()


def lock(path: str, stack: str, principal: str) -> None:
    store = KeyStore.open(path)
    kms = store.client(region=store.config.regions[0], principal=_root(store))
    signing.acquire(kms, stack, principal, datetime.now().astimezone())
    print(json.dumps({"locked": stack}), flush=True)
    sys.stdin.read()


class _Dying:
    """A real client that kills its process (kill -9) just before the call numbered `die_at`."""

    def __init__(self, client, calls: itertools.count, die_at: int) -> None:
        self._client, self._calls, self._die_at = client, calls, die_at

    def __getattr__(self, name: str):
        method = getattr(self._client, name)

        def call(**params):
            if next(self._calls) == self._die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return method(**params)

        return call


class _DyingBackend(LocalBackend):
    def __init__(self, store: KeyStore, die_at: int) -> None:
        super().__init__(store, _root(store))
        self.calls, self.die_at, self.dying = itertools.count(1), die_at, False

    def client(self, region: str):
        real = super().client(region)
        return _Dying(real, self.calls, self.die_at) if self.dying else real


def apply(path: str, stack_file: str, die_at: str) -> dict:
    backend = _DyingBackend(KeyStore.open(path), int(die_at))
    plan = plan_stack(load_valid_stack([stack_file]), backend, Flags())
    backend.dying = True
    apply_plan(plan, backend, saved=False)
    return {"calls": next(backend.calls) - 1, "steps": len(plan.effective)}


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "lock":
        lock(*args)
        return
    result = {"keys": keys, "call": call, "check": check, "apply": apply}[command](*args)
    print(json.dumps(result, default=str, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
