"""How much of the HSM's speed the full store path keeps.

Prints, measured in one run on one SoftHSM2 token:
  - the floor: raw PKCS#11 AES-GCM decryptions and encryptions per second (python-pkcs11, no store);
  - Decrypt and GenerateDataKey per second through the full store path (request checks, key lookup,
    state check, authorization, HSM call, audit append).
Goal (issue 2): the full path reaches at least half the raw HSM rate.

    python benchmarks/store_hotpath.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pkcs11

from kmsplan.store import KeyStore
from kmsplan.store.hsm import HSM_LOCK
from kmsplan.store.keystore import hsm_id
from kmsplan.store.layout import init_store

REGION = "eu-west-1"


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
    floor_decrypt, floor_encrypt = figures[0][1], figures[1][1]
    print(f"{'measure':40} {'ops/s':>10} {'vs floor':>9}")
    for name, value in figures:
        floor = floor_decrypt if "decrypt" in name.lower() else floor_encrypt
        share = "" if "floor" in name else f"{value / floor:8.0%}"
        print(f"{name:40} {value:10.0f} {share:>9}")
    print("goal: full path >= 50% of the raw HSM rate (Decrypt vs raw decrypt, GenerateDataKey vs raw encrypt)")


if __name__ == "__main__":
    main()
