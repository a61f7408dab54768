"""`kmsplan store ...`: create and look after the embedded key store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kmsplan.errors import KmsplanError
from kmsplan.store.layout import default_store_dir, init_store, parse_regions

STORE_OPTION = click.option(
    "--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Store folder (default: $KMSPLAN_STORE or ./.kmsplan).",
)


def open_store(store_dir: Path | None):
    from kmsplan.store import KeyStore

    return KeyStore.open(store_dir or default_store_dir())


@click.group()
def store() -> None:
    """Create and inspect the embedded key store."""


@store.command("init")
@STORE_OPTION
@click.option("--account", required=True, help="The AWS account id the store's keys belong to (12 digits).")
@click.option("--regions", required=True, help="Comma-separated regions, one token each: eu-west-1,eu-central-1.")
@click.option("--pkcs11-module", type=click.Path(dir_okay=False), default=None,
              help="PKCS#11 library of another HSM (default: SoftHSM2, tokens created in the store folder).")
@click.option("--admin", "administrator", default=None,
              help="Principal ARN used when a command names none (default: the account root).")
def init(store_dir: Path | None, account: str, regions: str, pkcs11_module: str | None,
         administrator: str | None) -> None:
    """Create a store: one token per region, the metadata database and the audit log."""
    path = store_dir or default_store_dir()
    config = init_store(path, account, parse_regions(regions), pkcs11_module, administrator)
    click.echo(f"Created kmsplan store in {path} for account {config.account}")
    for region in config.regions:
        click.echo(f"  {region}: token kmsplan-{region}")
    click.echo(f"Token PINs are in {path / 'pins.json'} (mode 0600). Back up the folder as a whole.")


@store.command("check")
@STORE_OPTION
def check(store_dir: Path | None) -> None:
    """Prove tokens and database agree: every key's material present, no unknown material."""
    with open_store(store_dir) as opened:
        problems = opened.check()
    if problems:
        for problem in problems:
            click.echo(problem)
        raise KmsplanError(f"{len(problems)} consistency problem(s) found", hint="restore the store from a backup")
    click.echo("Store is consistent: every key has its material and every token object is known.")


@store.command("info")
@STORE_OPTION
def info(store_dir: Path | None) -> None:
    """Show the store's account, regions, PKCS#11 module and key counts (never PINs)."""
    with open_store(store_dir) as opened:
        config = opened.config
        summary = {
            "path": str(config.path),
            "account": config.account,
            "administrator": config.administrator,
            "pkcs11_module": config.pkcs11_module,
            "regions": {region: len(opened.meta.keys_in(region)) for region in config.regions},
        }
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


@store.group("principals")
def principals() -> None:
    """The identity registry: IAM principals with their tags and identity policies."""


@principals.command("apply")
@STORE_OPTION
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def principals_apply(store_dir: Path | None, file: Path) -> None:
    """Replace the registry with the principals in FILE (YAML); nothing changes if it has problems.

    \b
    principals:
      - arn: arn:aws:iam::111122223333:role/payments-app
        org_id: o-exampleorgid
        tags: {project: payments}
        policies:
          - Version: "2012-10-17"
            Statement:
              - {Effect: Allow, Action: ["kms:Decrypt"], Resource: "*"}
    """
    from kmsplan.store.principals import read_principals_file

    entries = read_principals_file(file)
    with open_store(store_dir) as opened:
        opened.registry.replace(entries)
    click.echo(f"Registry replaced: {len(entries)} principal(s) (plus the account root).")


@principals.command("list")
@STORE_OPTION
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def principals_list(store_dir: Path | None, output: str) -> None:
    """Show the registered principals."""
    with open_store(store_dir) as opened:
        rows = [{"arn": p.arn, "org_id": p.org_id, "tags": dict(p.tags),
                 "policies": [json.loads(policy.text) for policy in p.policies]} for p in opened.registry.all()]
    if output == "json":
        click.echo(json.dumps({"format_version": 1, "principals": rows}, indent=2, sort_keys=True))
        return
    for row in rows:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(row["tags"].items()))
        click.echo(f"{row['arn']}  org={row['org_id'] or '-'}  tags={tags or '-'}  "
                   f"identity policies={len(row['policies'])}")


@store.group("credentials")
def credentials() -> None:
    """Access keys for `kmsplan serve` (SigV4), each bound to a registered principal."""


@credentials.command("create")
@STORE_OPTION
@click.option("--principal", required=True, help="Registered principal ARN the key acts as.")
@click.option("--description", default="", help="A note for `credentials list` (at most 256 characters).")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def credentials_create(store_dir: Path | None, principal: str, description: str, output: str) -> None:
    """Create an access key; print its id and secret (once).

    The secret is kept only inside the HSM token, as a non-extractable key: it cannot be shown
    again. Store it where the client reads it (an AWS profile, a secret manager)."""
    from kmsplan.server.credentials import create_access_key

    with open_store(store_dir) as opened:
        key, secret = create_access_key(opened, principal, description)
    if output == "json":
        click.echo(json.dumps({"AccessKeyId": key.access_key_id, "SecretAccessKey": secret,
                               "Principal": key.principal, "Status": key.status}, indent=2))
        return
    click.echo(f"AccessKeyId:     {key.access_key_id}\nSecretAccessKey: {secret}\nPrincipal:       {key.principal}")
    click.echo("The secret is shown this once; kmsplan keeps it only inside the HSM token.", err=True)


@credentials.command("list")
@STORE_OPTION
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def credentials_list(store_dir: Path | None, output: str) -> None:
    """Show the access keys (ids, principals, status; never secrets)."""
    from datetime import datetime, timezone

    from kmsplan.server.credentials import list_access_keys

    def when(stamp: float | None) -> str | None:
        return None if stamp is None else datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")

    with open_store(store_dir) as opened:
        rows = [{"AccessKeyId": k.access_key_id, "Principal": k.principal, "Status": k.status,
                 "Created": when(k.created), "Revoked": when(k.revoked), "Description": k.description}
                for k in list_access_keys(opened)]
    if output == "json":
        click.echo(json.dumps({"format_version": 1, "credentials": rows}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['AccessKeyId']}  {row['Status']:<7}  {row['Principal']}  created {row['Created']}"
                   + (f"  revoked {row['Revoked']}" if row["Revoked"] else "")
                   + (f"  {row['Description']}" if row["Description"] else ""))


@credentials.command("revoke")
@STORE_OPTION
@click.argument("access_key_id")
def credentials_revoke(store_dir: Path | None, access_key_id: str) -> None:
    """Revoke an access key for good.

    Running servers refuse it from their next request on; the secret is destroyed in the token
    and the key stays listed as Revoked."""
    from kmsplan.server.credentials import revoke_access_key

    with open_store(store_dir) as opened:
        key = revoke_access_key(opened, access_key_id)
    click.echo(f"Revoked {key.access_key_id} ({key.principal}).")
