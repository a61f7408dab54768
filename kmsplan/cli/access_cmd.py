"""`kmsplan access KEY`: who can do what with a key, through which layer, under which conditions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kmsplan.cli.store_cmd import STORE_OPTION, open_store
from kmsplan.errors import KmsplanError


@click.command()
@STORE_OPTION
@click.argument("key")
@click.option("--region", default=None, help="Region of the key (default: the store's first region).")
@click.option("--action", "actions", multiple=True, help="Only this action, e.g. kms:Decrypt (repeatable).")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def access(store_dir: Path | None, key: str, region: str | None, actions: tuple[str, ...], output: str) -> None:
    """List, for every registered principal, the KMS actions it may perform on KEY (id, ARN or alias)."""
    from kmsplan.errors import KMSError
    from kmsplan.policy import KEY_ACTIONS, parse_policy_cached, who_can
    from kmsplan.store.calls import resolve

    wanted = [a if a.lower().startswith("kms:") else f"kms:{a}" for a in actions] or None
    if wanted:
        known = {a.lower(): a for a in KEY_ACTIONS}
        unknown = [a for a in wanted if a.lower() not in known]
        if unknown:
            raise KmsplanError(f"unknown action {unknown[0]}", hint="use a KMS action such as kms:Decrypt")
        wanted = [known[a.lower()] for a in wanted]
    with open_store(store_dir) as store:
        region = region or store.config.regions[0]
        if region not in store.config.regions:
            raise KmsplanError(f"region {region} is not in this store", hint=f"use one of {', '.join(store.config.regions)}")
        try:
            view = resolve(store, region, key)
        except KMSError as error:
            raise KmsplanError(error.message, hint="give a key id, key ARN or alias of this region") from None
        facts, grants = store.authz.facts(view)
        paths = who_can(parse_policy_cached(view.record.policy), grants, store.registry.all(), facts, wanted)
    if output == "json":
        click.echo(json.dumps({"format_version": 1, "key": view.record.arn, "access": [
            {"principal": p.principal, "action": p.action, "layer": p.layer, "source": p.source,
             "conditions": list(p.conditions)} for p in paths]}, indent=2, sort_keys=True))
        return
    click.echo(f"Access to {view.record.arn}:")
    if not paths:
        click.echo("  nobody (no registered principal has any allowed action)")
    for principal in sorted({p.principal for p in paths}):
        click.echo(f"  {principal}")
        for p in (p for p in paths if p.principal == principal):
            conditions = f"  only when: {'; '.join(p.conditions)}" if p.conditions else ""
            click.echo(f"    {p.action:40} via {p.layer} {p.source}{conditions}")
