"""Rotation: symmetric keys only, periods of 90-2560 days, automatic rotation by the clock, on-demand
rotation (at most 25), old blobs still decrypting, new blobs on the newest material, and
multi-Region keys rotating together."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kms_support import kms_error, list_all, shared_key

from kmsplan.store import ciphertext


def version_of(blob: bytes) -> int:
    return ciphertext.parse(blob)[0].version


def rotations(client, key_id: str) -> list[tuple]:
    return [(r["RotationType"], r["RotationDate"])
            for r in list_all(client.list_key_rotations, "Rotations", KeyId=key_id, Limit=1000)]


@pytest.mark.parametrize("spec, usage", [("RSA_2048", "ENCRYPT_DECRYPT"), ("ECC_NIST_P256", "SIGN_VERIFY"),
                                         ("HMAC_256", "GENERATE_VERIFY_MAC")])
def test_only_symmetric_encryption_keys_rotate(store, kms, spec, usage):
    key_id = shared_key(store, spec, usage)
    for call in (lambda: kms.enable_key_rotation(KeyId=key_id),
                 lambda: kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90),
                 lambda: kms.disable_key_rotation(KeyId=key_id),
                 lambda: kms.rotate_key_on_demand(KeyId=key_id),
                 lambda: kms.get_key_rotation_status(KeyId=key_id),
                 lambda: kms.list_key_rotations(KeyId=key_id)):
        with kms_error("UnsupportedOperationException", spec):
            call()


def test_rotation_is_off_until_enabled_and_defaults_to_365_days(kms, clock):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False and "NextRotationDate" not in status
    assert kms.list_key_rotations(KeyId=key_id)["Rotations"] == []
    kms.enable_key_rotation(KeyId=key_id)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 365
    assert status["NextRotationDate"] == clock.now + timedelta(days=365)
    assert status["KeyId"].endswith(key_id)
    kms.disable_key_rotation(KeyId=key_id)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False and "NextRotationDate" not in status


@pytest.mark.parametrize("period", [90, 91, 1000, 2560])
def test_rotation_periods_from_90_to_2560_days(kms, clock, period):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=period)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["RotationPeriodInDays"] == period
    assert status["NextRotationDate"] == clock.now + timedelta(days=period)


@pytest.mark.parametrize("period", [89, 2561, 0, -90, 365 * 100])
def test_rotation_periods_outside_90_to_2560_days_are_refused(kms, period):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    with kms_error("ValidationException", "rotationPeriodInDays"):
        kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=period)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_automatic_rotation_follows_the_clock(kms, clock):
    key_id = kms.create_key(Description="auto rotation")["KeyMetadata"]["KeyId"]
    start = clock.now
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    first = kms.encrypt(KeyId=key_id, Plaintext=b"v1")["CiphertextBlob"]
    assert version_of(first) == 1

    clock.advance(days=90, seconds=-1)
    assert rotations(kms, key_id) == []
    assert version_of(kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]) == 1

    clock.advance(seconds=2)
    assert rotations(kms, key_id) == [("AUTOMATIC", start + timedelta(days=90))]
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["NextRotationDate"] == start + timedelta(days=180)
    second = kms.encrypt(KeyId=key_id, Plaintext=b"v2")["CiphertextBlob"]
    assert version_of(second) == 2

    clock.advance(days=200)  # two more periods passed while nobody called
    assert rotations(kms, key_id) == [("AUTOMATIC", start + timedelta(days=days)) for days in (90, 180, 270)]
    assert kms.get_key_rotation_status(KeyId=key_id)["NextRotationDate"] == start + timedelta(days=360)
    third = kms.encrypt(KeyId=key_id, Plaintext=b"v4")["CiphertextBlob"]
    assert version_of(third) == 4
    for blob, plaintext in ((first, b"v1"), (second, b"v2"), (third, b"v4")):
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext


def test_a_disabled_key_does_not_rotate_until_enabled_again(kms, clock):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    kms.disable_key(KeyId=key_id)
    clock.advance(days=100)
    assert rotations(kms, key_id) == []
    kms.enable_key(KeyId=key_id)
    assert [kind for kind, _ in rotations(kms, key_id)] == ["AUTOMATIC"]


def test_rotation_disabled_means_no_automatic_rotation(kms, clock):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    kms.disable_key_rotation(KeyId=key_id)
    clock.advance(days=200)
    assert rotations(kms, key_id) == []


def test_on_demand_rotation_up_to_25_times(kms, clock):
    key_id = kms.create_key(Description="on demand")["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=2000)
    next_date = kms.get_key_rotation_status(KeyId=key_id)["NextRotationDate"]
    blobs = [(kms.encrypt(KeyId=key_id, Plaintext=b"version 1")["CiphertextBlob"], b"version 1")]
    for n in range(2, 27):
        assert kms.rotate_key_on_demand(KeyId=key_id) == {"KeyId": key_id}
        plaintext = f"version {n}".encode()
        blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext)["CiphertextBlob"]
        assert version_of(blob) == n, "new encryptions use the newest material"
        blobs.append((blob, plaintext))
    with kms_error("LimitExceededException", "25"):
        kms.rotate_key_on_demand(KeyId=key_id)
    assert version_of(kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]) == 26
    listed = rotations(kms, key_id)
    assert listed == [("ON_DEMAND", clock.now)] * 25
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["OnDemandRotationStartDate"] == clock.now
    assert status["NextRotationDate"] == next_date, "on-demand rotation leaves the schedule alone"
    for blob, plaintext in blobs:
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext


def test_list_key_rotations_pages_through_every_rotation_once(kms, clock):
    """Rotations made at the same instant still page correctly (the clock does not move here)."""
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(7):
        kms.rotate_key_on_demand(KeyId=key_id)
    seen = []
    marker = None
    for _ in range(20):
        page = kms.list_key_rotations(KeyId=key_id, Limit=3, **({"Marker": marker} if marker else {}))
        assert len(page["Rotations"]) <= 3
        seen += page["Rotations"]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert len(seen) == 7
    assert all(entry == {"KeyId": key_id, "RotationDate": clock.now, "RotationType": "ON_DEMAND"} for entry in seen)
    with kms_error("InvalidMarkerException"):
        kms.list_key_rotations(KeyId=key_id, Marker="nonsense")


def test_automatic_and_on_demand_rotations_are_listed_in_order(kms, clock):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    start = clock.now
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    clock.advance(days=10)
    kms.rotate_key_on_demand(KeyId=key_id)
    clock.advance(days=85)
    assert rotations(kms, key_id) == [("ON_DEMAND", start + timedelta(days=10)),
                                      ("AUTOMATIC", start + timedelta(days=90))]


def test_multi_region_rotation_reaches_every_replica(store, kms, clock):
    _, second, third = store.config.regions
    key_id = kms.create_key(MultiRegion=True, Description="mrk rotation")["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=second)
    replica = store.client(second)
    old = kms.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]

    kms.rotate_key_on_demand(KeyId=key_id)
    after = kms.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    assert version_of(after) == 2
    assert replica.decrypt(CiphertextBlob=after)["Plaintext"] == b"after"
    assert replica.decrypt(CiphertextBlob=old)["Plaintext"] == b"before"
    assert version_of(replica.encrypt(KeyId=key_id, Plaintext=b"r")["CiphertextBlob"]) == 2

    # rotation settings are shared: enabled on the primary, visible on the replica
    start = clock.now
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=120)
    status = replica.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 120
    clock.advance(days=121)
    assert [kind for kind, _ in rotations(replica, key_id)] == ["ON_DEMAND", "AUTOMATIC"]
    assert rotations(replica, key_id)[-1] == ("AUTOMATIC", start + timedelta(days=120))
    newest = kms.encrypt(KeyId=key_id, Plaintext=b"newest")["CiphertextBlob"]
    assert version_of(newest) == 3
    assert replica.decrypt(CiphertextBlob=newest)["Plaintext"] == b"newest"

    # a replica made later receives every version
    kms.replicate_key(KeyId=key_id, ReplicaRegion=third)
    late = store.client(third)
    for blob, plaintext in ((old, b"before"), (after, b"after"), (newest, b"newest")):
        assert late.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
    assert rotations(late, key_id) == rotations(kms, key_id)


def test_replicas_refuse_rotation_changes(store, kms):
    second = store.config.regions[1]
    key_id = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=second)
    replica = store.client(second)
    for call in (lambda: replica.enable_key_rotation(KeyId=key_id),
                 lambda: replica.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=200),
                 lambda: replica.disable_key_rotation(KeyId=key_id),
                 lambda: replica.rotate_key_on_demand(KeyId=key_id)):
        with kms_error("UnsupportedOperationException", "replica"):
            call()
    assert replica.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False
    assert rotations(kms, key_id) == []
