"""How much of the HSM's speed the full store path keeps.

Prints, measured in one run on one SoftHSM2 token:
  - the floor: raw PKCS#11 AES-GCM decryptions and encryptions per second (python-pkcs11, no store);
  - Decrypt and GenerateDataKey per second through the full store path (request checks, key lookup,
    state check, authorization, HSM call, audit append).
  - Decrypt per second by an application role under a realistic key policy (5 statements with
    conditions, 20 grants on the key): with one encryption context (the store remembers the
    decision) and with a new context on every call (each decision evaluated afresh), and the share
    of each path spent in authorization.
Goals: the full path reaches at least half the raw HSM rate (issue 2); authorization costs at
most 25% of the full Decrypt path (issue 3).

    python benchmarks/store_hotpath.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pkcs11

from kmsplan.policy import Request, authorize, parse_policy_cached
from kmsplan.store import KeyStore
from kmsplan.store.authz import implied_attributes
from kmsplan.store.hsm import HSM_LOCK
from kmsplan.store.keystore import hsm_id
from kmsplan.store.layout import init_store
from kmsplan.store.principals import PrincipalEntry

REGION = "eu-west-1"
ACCOUNT = "111122223333"
APP = f"arn:aws:iam::{ACCOUNT}:role/payments-app"


def realistic_policy() -> str:
    """Five statements with conditions, as a payments team would write them."""
    root = f"arn:aws:iam::{ACCOUNT}:root"
    statements = [
        {"Sid": "EnableIAM", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "AppUse", "Effect": "Allow", "Principal": {"AWS": APP},
         "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*"], "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "acme"},
                       "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant", "purpose"]}}},
        {"Sid": "DenyOutsideOrg", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
         "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-exampleorgid"}}},
        {"Sid": "DenyOtherProjects", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",
         "Resource": "*", "Condition": {"StringNotEquals": {"aws:PrincipalTag/project": "payments"}}},
        {"Sid": "AuditorsDescribe", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:DescribeKey",
         "Resource": "*", "Condition": {"Bool": {"kms:MultiRegion": "false"}}},
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def rate(action, seconds: float) -> float:
    """Calls per second of `action`, over at least `seconds` (after a short warm-up)."""
    for _ in range(200):
        action()
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(500):
            action()
        count += 500
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    parser.add_argument("--unique-contexts", type=int, default=60000,
                        help="ciphertexts made under distinct contexts for the never-remembered figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        init_store(path, "111122223333", (REGION,), None, None)
        with KeyStore.open(path) as store:
            kms = store.client(region=REGION)
            key_id = kms.create_key(Description="benchmark")["KeyMetadata"]["KeyId"]
            context = {"tenant": "acme", "purpose": "benchmark"}
            blob = kms.encrypt(KeyId=key_id, Plaintext=os.urandom(32), EncryptionContext=context)["CiphertextBlob"]

            # The floor: the same key object, straight through python-pkcs11.
            token = store.token_for(REGION)
            with HSM_LOCK:
                raw_key = token._object(hsm_id(key_id, 1), pkcs11.ObjectClass.SECRET_KEY)
            iv, aad, plaintext = os.urandom(12), os.urandom(64), os.urandom(32)
            sealed = raw_key.encrypt(plaintext, mechanism=pkcs11.Mechanism.AES_GCM,
                                     mechanism_param=pkcs11.GCMParams(iv, aad, 128))

            def raw_decrypt() -> None:
                raw_key.decrypt(sealed, mechanism=pkcs11.Mechanism.AES_GCM,
                                mechanism_param=pkcs11.GCMParams(iv, aad, 128))

            def raw_encrypt() -> None:
                raw_key.encrypt(plaintext, mechanism=pkcs11.Mechanism.AES_GCM,
                                mechanism_param=pkcs11.GCMParams(os.urandom(12), aad, 128))

            def store_decrypt() -> None:
                kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)

            def store_generate_data_key() -> None:
                kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)

            figures = [
                ("raw PKCS#11 AES-GCM decrypt (floor)", rate(raw_decrypt, args.seconds)),
                ("raw PKCS#11 AES-GCM encrypt (floor)", rate(raw_encrypt, args.seconds)),
                ("store Decrypt (full path)", rate(store_decrypt, args.seconds)),
                ("store GenerateDataKey (full path)", rate(store_generate_data_key, args.seconds)),
            ]

            # Issue 3: an application role, a realistic policy, 20 grants on the key.
            store.registry.replace([PrincipalEntry(APP, "o-exampleorgid", {"project": "payments"}, ()),
                                    PrincipalEntry(f"arn:aws:iam::{ACCOUNT}:root", "o-exampleorgid",
                                                   {"project": "payments"}, ())])
            kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "project", "TagValue": "payments"}])
            kms.put_key_policy(KeyId=key_id, Policy=realistic_policy())
            for number in range(20):
                kms.create_grant(KeyId=key_id, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:role/worker-{number}",
                                 Operations=["Decrypt", "GenerateDataKey"],
                                 Constraints={"EncryptionContextSubset": {"tenant": f"t{number}"}})
            app = store.client(region=REGION, principal=APP)
            app_decrypt = lambda: app.decrypt(CiphertextBlob=blob, EncryptionContext=context)  # noqa: E731
            app_decrypt()
            # The store remembers decisions per (caller, key, action, context, ...): a new
            # encryption context on every call is the workload that never finds one.
            unique = [{"tenant": "acme", "purpose": f"object-{number}"} for number in range(args.unique_contexts)]
            unique_blobs = [kms.encrypt(KeyId=key_id, Plaintext=b"k" * 32, EncryptionContext=c)["CiphertextBlob"]
                            for c in unique]
            next_unique = iter(range(len(unique)))

            def app_decrypt_new_context() -> None:
                number = next(next_unique)
                app.decrypt(CiphertextBlob=unique_blobs[number], EncryptionContext=unique[number])

            store.refresh()
            view = store.view(REGION, key_id)
            caller = store.registry.get(APP)
            facts, grants = store.authz.facts(view)
            policy = parse_policy_cached(view.record.policy)
            attributes = implied_attributes("kms:Decrypt", facts.spec, {})

            def authorization_remembered() -> None:
                store.authz.check(caller, view, "kms:Decrypt", context, {})

            def authorization_evaluated() -> None:
                assert authorize(Request("kms:Decrypt", caller, facts, context, attributes), policy, grants).allowed

            policy_rate = rate(app_decrypt, args.seconds)
            new_context_rate = rate(app_decrypt_new_context, min(args.seconds, len(unique) / 50000))
            remembered_rate = rate(authorization_remembered, args.seconds)
            evaluated_rate = rate(authorization_evaluated, args.seconds)
            figures.append(("store Decrypt, realistic policy + 20 grants", policy_rate))
            figures.append(("  the same, a new encryption context each call", new_context_rate))
    floor_decrypt, floor_encrypt = figures[0][1], figures[1][1]
    print(f"{'measure':40} {'ops/s':>10} {'vs floor':>9}")
    for name, value in figures:
        floor = floor_decrypt if "decrypt" in name.lower() else floor_encrypt
        share = "" if "floor" in name else f"{value / floor:8.0%}"
        print(f"{name:40} {value:10.0f} {share:>9}")
    print("goal: full path >= 50% of the raw HSM rate (Decrypt vs raw decrypt, GenerateDataKey vs raw encrypt)")
    for label, checks, decrypts in (("a remembered decision", remembered_rate, policy_rate),
                                    ("evaluated (a new context)", evaluated_rate, new_context_rate)):
        print(f"authorization, {label}: {checks:.0f} checks/s = {1e6 / checks:.1f} us of "
              f"{1e6 / decrypts:.1f} us per Decrypt ({decrypts / checks:.0%}; goal <= 25%)")


if __name__ == "__main__":
    main()
