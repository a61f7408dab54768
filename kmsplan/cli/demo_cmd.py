"""`kmsplan demo`: a guided tour of the key store, run against a real store (the README's first command)."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kmsplan.cli.store_cmd import STORE_OPTION, open_store
from kmsplan.errors import KMSError


def _step(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def _expect_failure(action, code: str) -> str:
    try:
        action()
    except KMSError as error:
        if error.code != code:
            raise
        return error.code
    raise click.ClickException(f"expected {code}, but the call succeeded")


@click.command()
@STORE_OPTION
def demo(store_dir: Path | None) -> None:
    """Walk through envelope encryption, multi-Region keys, rotation, signing and the audit log."""
    with open_store(store_dir) as store:
        home, *others = store.config.regions
        kms = store.client(region=home)

        _step(f"A symmetric key in {home}, with an alias")
        key = kms.create_key(Description="kmsplan demo: payments data", Tags=[{"TagKey": "app", "TagValue": "demo"}])
        key_id = key["KeyMetadata"]["KeyId"]
        alias = f"alias/demo-payments-{key_id[:8]}"
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)
        click.echo(f"created {key['KeyMetadata']['Arn']} ({key['KeyMetadata']['KeySpec']}) as {alias}")

        _step("Envelope encryption: a data key bound to an encryption context")
        context = {"tenant": "acme", "purpose": "invoice"}
        data_key = kms.generate_data_key(KeyId=alias, KeySpec="AES_256", EncryptionContext=context)
        click.echo(f"data key: {len(data_key['Plaintext'])} bytes in plaintext (use, then discard), "
                   f"{len(data_key['CiphertextBlob'])} bytes wrapped (store beside the data)")
        again = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context)
        click.echo(f"decrypt with the same context: {'same key back' if again['Plaintext'] == data_key['Plaintext'] else 'MISMATCH'}")
        code = _expect_failure(lambda: kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"],
                                                   EncryptionContext={"tenant": "evil"}), "InvalidCiphertextException")
        click.echo(f"decrypt with another tenant's context: {code}")

        _step("Rotation keeps old ciphertext readable")
        kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
        kms.rotate_key_on_demand(KeyId=key_id)
        status = kms.get_key_rotation_status(KeyId=key_id)
        click.echo(f"rotation on, every {status['RotationPeriodInDays']} days, next {status['NextRotationDate']:%Y-%m-%d}")
        old = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context)
        click.echo(f"the pre-rotation data key still decrypts: {old['Plaintext'] == data_key['Plaintext']}")

        if others:
            dr = others[0]
            _step(f"A multi-Region key: ciphertext from {home} decrypts in {dr}")
            mrk = kms.create_key(MultiRegion=True, Description="kmsplan demo: DR")["KeyMetadata"]
            kms.replicate_key(KeyId=mrk["KeyId"], ReplicaRegion=dr)
            blob = kms.encrypt(KeyId=mrk["KeyId"], Plaintext=b"order 42", EncryptionContext=context)["CiphertextBlob"]
            replica = store.client(region=dr)
            plain = replica.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]
            click.echo(f"{mrk['KeyId']} replicated; decrypted in {dr}: {plain.decode()}")
            single = kms.encrypt(KeyId=key_id, Plaintext=b"local only")["CiphertextBlob"]
            code = _expect_failure(lambda: replica.decrypt(CiphertextBlob=single), "NotFoundException")
            click.echo(f"a single-Region key's ciphertext in {dr}: {code}")

        _step("Signing inside the HSM, verified outside it")
        signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        signature = kms.sign(KeyId=signer["KeyId"], Message=b"release v1.0", SigningAlgorithm="ECDSA_SHA_256")
        public = serialization.load_der_public_key(kms.get_public_key(KeyId=signer["KeyId"])["PublicKey"])
        public.verify(signature["Signature"], b"release v1.0", ec.ECDSA(hashes.SHA256()))
        click.echo("ECDSA P-256 signature verified with the cryptography library and GetPublicKey's output")

        _step("Housekeeping")
        for created in [key_id, signer["KeyId"]]:
            kms.schedule_key_deletion(KeyId=created, PendingWindowInDays=7)
        if others:
            replica.schedule_key_deletion(KeyId=mrk["KeyId"], PendingWindowInDays=7)
            state = kms.schedule_key_deletion(KeyId=mrk["KeyId"], PendingWindowInDays=7)["KeyState"]
            click.echo(f"multi-Region primary: {state} (its window starts when its last replica is gone)")
        click.echo("demo keys scheduled for deletion in 7 days: deletion always waits out its window")
        count, broken = store.audit.verify()
        click.echo(f"audit log: {count} records, chain {'intact' if broken is None else 'BROKEN: ' + broken.reason}")
        problems = store.check()
        click.echo(f"tokens and database: {'consistent' if not problems else problems}")
