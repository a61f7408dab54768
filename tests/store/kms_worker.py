"""Subprocess workers for the crash and concurrency tests: each opens a store of its own.

    python kms_worker.py churn STORE SEED START_DAYS   create/replicate/rotate/schedule-delete forever
    python kms_worker.py load STORE TAG COUNT          open, wait for a line on stdin, then create COUNT
                                                       keys and encrypt with each; print JSON
    python kms_worker.py reopen STORE SECONDS          open the store again and again, using it each time
    python kms_worker.py verify STORE [BLOBS.json]     recover, check, use every key; print JSON

Run by tests/store/test_crash_concurrency.py (never imported by pytest: the PKCS#11 library is
initialised once per process, so a second store must live in another process).
"""

from __future__ import annotations

import json
import random
import sys
import time
from datetime import datetime, timedelta, timezone

from kmsplan.errors import KMSError
from kmsplan.store import KeyStore


def churn(path: str, seed: int, start_days: int) -> None:
    """Mutate the store as fast as possible until killed. The clock runs two days ahead per step,
    so scheduled deletions fall due (and are carried out) while the churn goes on."""
    rng = random.Random(seed)
    offset = [float(start_days)]
    store = KeyStore.open(path, clock=lambda: datetime.now(timezone.utc) + timedelta(days=offset[0]))
    home, away = store.config.regions[:2]
    clients = {home: store.client(home), away: store.client(away)}
    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        roll = rng.random()
        kms = clients[home]
        if roll < 0.3:
            kms.create_key(Description=f"churn {seed}/{step}")
        elif roll < 0.6:
            key_id = kms.create_key(MultiRegion=True, Description=f"churn mrk {seed}/{step}")["KeyMetadata"]["KeyId"]
            kms.replicate_key(KeyId=key_id, ReplicaRegion=away)
        else:
            client = clients[rng.choice([home, away])]
            keys = client.list_keys(Limit=1000)["Keys"]
            if keys:
                key_id = rng.choice(keys)["KeyId"]
                metadata = client.describe_key(KeyId=key_id)["KeyMetadata"]
                primary = metadata.get("MultiRegionConfiguration", {}).get("MultiRegionKeyType") != "REPLICA"
                if metadata["KeyState"] == "Enabled" and roll < 0.75 and primary:
                    client.rotate_key_on_demand(KeyId=key_id)
                elif metadata["KeyState"] in ("Enabled", "Disabled"):
                    client.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        offset[0] += 2


def load(path: str, tag: str, count: int) -> None:
    """Create keys and encrypt under them while other processes do the same."""
    store = KeyStore.open(path)
    print("opened", flush=True)
    sys.stdin.readline()  # wait for "go": every worker then writes at once
    home, away = store.config.regions[:2]
    kms = store.client(home)
    made = []
    for n in range(count):
        multi = n % 4 == 0
        key_id = kms.create_key(Description=f"load {tag} {n}", MultiRegion=multi)["KeyMetadata"]["KeyId"]
        if multi:
            kms.replicate_key(KeyId=key_id, ReplicaRegion=away)
        plaintext = f"{tag}-{n}".encode()
        blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext={"worker": tag})["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"worker": tag})["Plaintext"] == plaintext
        data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
        assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
        made.append({"key": key_id, "multi": multi, "blob": blob.hex(), "plaintext": plaintext.decode(),
                     "context": {"worker": tag}})
    store.close()
    print(json.dumps(made), flush=True)


def use_key(store: KeyStore, region: str, key_id: str) -> int:
    """Encrypt and decrypt with an enabled key (in every region that holds a multi-Region key);
    check that any other key refuses. Returns how many keys were used (0 or 1)."""
    kms = store.client(region)
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    if metadata["KeyState"] != "Enabled":
        try:
            kms.encrypt(KeyId=key_id, Plaintext=b"x")
        except KMSError as error:
            if error.code not in ("KMSInvalidStateException", "DisabledException"):
                raise
            return 0
        raise AssertionError(f"a {metadata['KeyState']} key encrypted")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"after the crash")["CiphertextBlob"]
    holders = {region}
    if metadata["MultiRegion"]:
        config = metadata["MultiRegionConfiguration"]
        holders |= {entry["Region"] for entry in [config["PrimaryKey"], *config["ReplicaKeys"]]}
    for holder in holders:
        peer = store.client(holder)
        if peer.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled":
            assert peer.decrypt(CiphertextBlob=blob)["Plaintext"] == b"after the crash", holder
    return 1


def reopen(path: str, seconds: float) -> None:
    """Open the store again and again for `seconds` (each open logs in to every region's token),
    using it each time."""
    deadline = time.monotonic() + seconds
    opened = 0
    while time.monotonic() < deadline:
        store = KeyStore.open(path)
        store.client(store.config.regions[0]).list_keys(Limit=1)
        store.close()
        opened += 1
    print("reopened", opened)


def verify(path: str, blobs_file: str | None) -> None:
    """Open (which recovers), check tokens against the database, and use every key listed."""
    far_future = datetime.now(timezone.utc) + timedelta(days=20_000)
    store = KeyStore.open(path, clock=lambda: far_future)
    report: dict = {"problems_after_open": store.check(), "failures": [], "keys": {}, "used": 0}
    for region in store.config.regions:
        kms = store.client(region)
        keys = kms.list_keys(Limit=1000)["Keys"]
        report["keys"][region] = len(keys)
        for entry in keys:
            try:
                report["used"] += use_key(store, region, entry["KeyId"])
            except Exception as error:  # noqa: BLE001  (report every key that does not work, not just the first)
                report["failures"].append(f"{region} {entry['KeyId']}: {type(error).__name__}: {error}")
    if blobs_file:
        with open(blobs_file) as handle:
            items = json.load(handle)
        for item in items:
            regions = store.config.regions[:2] if item["multi"] else store.config.regions[:1]
            for region in regions:
                plain = store.client(region).decrypt(CiphertextBlob=bytes.fromhex(item["blob"]),
                                                     EncryptionContext=item["context"])["Plaintext"]
                if plain != item["plaintext"].encode():
                    report["failures"].append(f"blob of {item['key']} decrypts wrongly in {region}")
                report["used"] += 1
    report["problems_at_end"] = store.check()
    count, broken = store.audit.verify()
    report["audit"] = [count, str(broken)]
    store.close()
    print(json.dumps(report))


if __name__ == "__main__":
    command, store_path, *rest = sys.argv[1:]
    if command == "churn":
        churn(store_path, int(rest[0]), int(rest[1]))
    elif command == "load":
        load(store_path, rest[0], int(rest[1]))
    elif command == "reopen":
        reopen(store_path, float(rest[0]))
    elif command == "verify":
        verify(store_path, rest[0] if rest else None)
    else:
        raise SystemExit(f"unknown command {command}")
