"""How fast the reconciler is on big applied stacks, next to its floors.

For each size (default 1,000 and 10,000 keys) the script writes a stack of single-Region
SYMMETRIC_DEFAULT keys (every 2nd with tags, every 4th with an alias, every 10th with a small
inline key policy, the rest the AWS default policy; 500 keys per file) into a temporary folder,
creates a fresh store there (SoftHSM2, one region), applies the stack, then times, best of
--repeat runs each:

* stack:    kmsplan.stack.load_stack(folder): parse + validate the YAML into the typed model
* metadata: a direct read of the live metadata from SQLite, no KMS API: every row of the region's
            keys, tags, aliases and grants (what read_live asks the API for), in one read-only
            connection
* floor:    stack + metadata, the least any planner must do: know what is declared, know what is
            live
* read_live: kmsplan.plan.live.read_live through the store's KMS API (5 audited calls per key),
            shown to split the plan's time; it is not part of the floor
* plan:     load_valid_stack + plan_stack (read_live, diff, guards with the audit-log scan for
            last use, digest), checked to have no effective change and no finding
* drift:    load_valid_stack + drift, checked to report nothing

read_live, plan and drift each start with the store object's caches dropped (key views, key
facts, remembered authorization decisions), as in a `kmsplan plan` process, which opens the
store, plans once and exits.

Goals (issue): the no-op plan within 3x of the floor, and linear in keys (the per-key cost should
not grow from 1,000 to 10,000 keys).

Apply goal: the first size's apply (plan_stack + apply_plan of every key onto the empty store,
as `kmsplan apply --auto-approve` does) next to the token alone generating as many AES-256 keys:
python-pkcs11's generate_key on a fresh token of the same kind (SoftHSM2, a store made by
init_store), with the store's own template (token object, sensitive, not extractable, CKA_ID
set). Goal: apply within 1.5x of the token time. The token's own rate is noisy on a shared
machine (its key files are written to disk), so the apply line also gives the time the apply
spent inside the store's Token.generate calls, and the ratio to that, which moves much less.
The token makes roughly 80-130 keys/s on this kind of machine, so 10,000 keys take the token
alone 80-120 s, and the whole run (both sizes, --repeat 3) 6-9 minutes.

Every store call, reads included, appends an audit record, and the plan's guards scan the whole
audit log for the keys' last cryptographic use: each timed plan or drift makes the next one a
little slower. The audit-log size at each measurement is printed.

    python benchmarks/plan_scale.py [--keys 1000,10000] [--repeat 3] [--skip-apply-goal]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

from pkcs11 import Attribute, KeyType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmsplan.plan import (
    Flags,
    LocalBackend,
    apply_plan,
    drift,
    load_valid_stack,
    plan_stack,
)
from kmsplan.plan.live import read_live
from kmsplan.stack import has_errors, load_stack
from kmsplan.store import KeyStore
from kmsplan.store.hsm import HSM_LOCK, Token
from kmsplan.store.layout import init_store
from kmsplan.store.principals import PrincipalEntry

ACCOUNT = "111122223333"
REGION = "eu-west-1"
STACK = "plan-scale"
READER = f"arn:aws:iam::{ACCOUNT}:role/app-reader"

HEADER = f"""\
version: 1
stack: {STACK}
account: "{ACCOUNT}"
region: {REGION}
defaults:
  deletion_window_days: 30
  tags: {{env: bench}}
keys:
"""

POLICY = """\
    policy:
      Version: "2012-10-17"
      Statement:
        - Sid: EnableIAMPolicies
          Effect: Allow
          Principal: {AWS: "arn:aws:iam::${account}:root"}
          Action: "kms:*"
          Resource: "*"
        - Sid: ReaderDecrypts
          Effect: Allow
          Principal: {AWS: "arn:aws:iam::${account}:role/app-reader"}
          Action: [kms:Decrypt, kms:DescribeKey]
          Resource: "*"
"""


def key_yaml(i: int) -> str:
    text = f"  app-{i:05d}:\n    description: data at rest for app {i}\n"
    if i % 2 == 0:
        text += f'    tags: {{app: app-{i}, cost-center: "cc-{i % 97}"}}\n'
    if i % 4 == 0:
        text += f"    aliases: [alias/app-{i:05d}]\n"
    if i % 10 == 0:
        text += POLICY
    return text


def generate(folder: Path, keys: int, per_file: int = 500) -> list[Path]:
    files = []
    for start in range(0, keys, per_file):
        path = folder / f"keys-{start // per_file:04d}.yaml"
        path.write_text(HEADER + "".join(key_yaml(i) for i in range(start, min(keys, start + per_file))),
                        encoding="utf-8")
        files.append(path)
    return files


def new_store(path: Path) -> KeyStore:
    init_store(path, ACCOUNT, (REGION,), None, None)
    store = KeyStore.open(path)
    store.registry.replace([PrincipalEntry(READER, None, {}, ())])
    return store


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def read_metadata(db: Path) -> int:
    """The floor's live read: every row the region holds about keys, tags, aliases and grants."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = 0
        for table in ("keys", "tags", "aliases", "grants"):
            rows += len(conn.execute(f"SELECT * FROM {table} WHERE region = ?", (REGION,)).fetchall())
        return rows
    finally:
        conn.close()


def token_floor(path: Path, keys: int) -> float:
    """Seconds for a fresh token to generate `keys` AES-256 keys, as Token.generate makes them."""
    with new_store(path) as store:
        session = store.token_for(REGION)._session  # python-pkcs11 Session, logged in, read/write
        template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
        with HSM_LOCK:
            start = time.perf_counter()
            for number in range(keys):
                session.generate_key(KeyType.AES, 256, id=f"bench-{number:06d}/1".encode(), store=True,
                                     template=template)
            return time.perf_counter() - start


@contextlib.contextmanager
def token_time() -> Iterator[list[float]]:
    """Seconds spent inside the store's Token.generate while the block runs (in `[0]`)."""
    spent = [0.0]
    original = Token.generate

    def timed(self: Token, *args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    Token.generate = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        Token.generate = original  # type: ignore[method-assign]


def apply_stack(folder: Path, backend: LocalBackend) -> tuple[float, float, int]:
    """(plan s, apply_plan s, steps) of applying the stack onto the store."""
    start = time.perf_counter()
    plan = plan_stack(load_valid_stack([str(folder)]), backend, Flags())
    planned = time.perf_counter()
    assert not plan.has_errors, [f.message for f in plan.findings if f.is_error][:3]
    results, _ = apply_plan(plan, backend, saved=False)
    return planned - start, time.perf_counter() - planned, len(results)


def audit_records(store: KeyStore) -> int:
    with open(store.audit.path, "rb") as handle:
        return sum(1 for _ in handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="1000,10000", help="stack sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-apply-goal", action="store_true", help="do not time the token floor")
    args = parser.parse_args()
    sizes = [int(part) for part in args.keys.split(",") if part.strip()]

    lines: list[str] = []
    per_key: dict[int, float] = {}
    applies: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kmsplan-plan-scale-") as tmp:
        token_s = None if args.skip_apply_goal else token_floor(Path(tmp) / "token-floor", sizes[0])
        for keys in sizes:
            folder = Path(tmp) / f"stack-{keys}"
            folder.mkdir()
            generate(folder, keys)
            with new_store(Path(tmp) / f"store-{keys}") as store:
                backend = LocalBackend(store)
                with token_time() as spent:
                    plan_s, apply_s, steps = apply_stack(folder, backend)
                total, inside = plan_s + apply_s, spent[0]
                applies.append(f"apply of {keys} new keys ({steps} steps): plan {plan_s:.1f} s + apply_plan "
                               f"{apply_s:.1f} s = {total:.1f} s, {keys / total:.0f} keys/s; of which "
                               f"{inside:.1f} s in the token's key generation, {(total - inside) / keys * 1e3:.1f} "
                               f"ms/key elsewhere; apply / its own token time {total / inside:.2f}x")
                if keys == sizes[0] and token_s is not None:
                    applies.append(f"token alone, {keys} AES-256 keys: {token_s:.1f} s ({keys / token_s:.0f} keys/s); "
                                   f"apply/token {total / token_s:.2f}x (goal <= 1.5x), "
                                   f"apply_plan alone/token {apply_s / token_s:.2f}x")

                def stack_only(folder: Path = folder, keys: int = keys) -> None:
                    stack, findings = load_stack([str(folder)])
                    assert stack is not None and not has_errors(findings) and len(stack.keys) == keys

                # Each timed run starts from what a `kmsplan plan` process knows: nothing cached
                # in the store object (views, key facts, authorization decisions).
                def live_only(backend: LocalBackend = backend, keys: int = keys) -> None:
                    backend.store.drop_caches()
                    assert len(read_live(backend.clients(), STACK).keys) == keys

                def no_op_plan(folder: Path = folder, backend: LocalBackend = backend) -> None:
                    backend.store.drop_caches()
                    plan = plan_stack(load_valid_stack([str(folder)]), backend, Flags())
                    assert not plan.effective and not plan.findings, (plan.summary_line(), plan.findings[:3])

                def no_drift(folder: Path = folder, backend: LocalBackend = backend) -> None:
                    backend.store.drop_caches()
                    items = drift(load_valid_stack([str(folder)]), backend)
                    assert not items, items[:3]

                db = store.config.path / "metadata.db"
                stack_s = best_of(args.repeat, stack_only)
                meta_s = best_of(args.repeat, lambda db=db: read_metadata(db))
                floor_s = stack_s + meta_s
                records = audit_records(store)
                live_s = best_of(args.repeat, live_only)
                plan_s = best_of(args.repeat, no_op_plan)
                drift_s = best_of(args.repeat, no_drift)
                per_key[keys] = plan_s / keys * 1e6
                lines.append(f"{keys:>6} {stack_s:>7.2f} {meta_s:>6.3f} {floor_s:>7.2f} {live_s:>9.2f} "
                             f"{plan_s:>7.2f} {plan_s / floor_s:>9.1f}x {drift_s:>7.2f} {drift_s / floor_s:>10.1f}x "
                             f"{per_key[keys]:>9.0f} {records:>8}")
    print(f"python {sys.version.split()[0]}, python-pkcs11 {metadata.version('python-pkcs11')}, SoftHSM2, "
          f"one region; best of {args.repeat} runs")
    print("floor = load_stack (parse + validate) + direct SQLite read of the region's keys, tags, aliases, grants")
    print(f"{'keys':>6} {'stack s':>7} {'sql s':>6} {'floor s':>7} {'read_live':>9} {'plan s':>7} "
          f"{'plan/floor':>10} {'drift s':>7} {'drift/floor':>11} {'plan us/key':>9} {'audit':>8}")
    for line in lines:
        print(line)
    print("goal: plan <= 3x floor; 'audit' = audit records before the timed runs (the guards scan them all)")
    if len(per_key) > 1:
        small, large = min(per_key), max(per_key)
        print(f"plan per-key cost at {large} keys / at {small} keys: {per_key[large] / per_key[small]:.2f} "
              "(1.00 = linear)")
    for line in applies:
        print(line)


if __name__ == "__main__":
    main()
