"""Which store a command works on: the embedded one in --store, or a served one at --endpoint.

Shared by every command that can run away from the store's host (plan, apply, drift, import,
force-unlock, verify, audit), so `--endpoint` / `KMSPLAN_ENDPOINT` means the same everywhere and
mixing it with `--store` is refused the same way.
"""

from __future__ import annotations

from pathlib import Path

import click

from kmsplan.errors import KmsplanError
from kmsplan.plan import LocalBackend
from kmsplan.plan.remote import RemoteBackend

_META = "kmsplan.endpoint"


def _remember_endpoint(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    # ctx.meta is shared by a group and its subcommand: a subcommand's unset option must not
    # forget the endpoint its group was given (`kmsplan audit` takes it on both levels).
    if value is not None or _META not in ctx.meta:
        ctx.meta[_META] = value


ENDPOINT_OPTION = click.option(
    "--endpoint", default=None, envvar="KMSPLAN_ENDPOINT", expose_value=False, callback=_remember_endpoint,
    help="URL of a served store (`kmsplan serve`), reached with boto3 and the standard AWS credentials "
         "instead of opening --store (env KMSPLAN_ENDPOINT).")


def endpoint(store_dir: Path | None) -> str | None:
    """The --endpoint of the current command, if any (refused together with --store)."""
    url = click.get_current_context().meta.get(_META)
    if url and store_dir is not None:
        raise KmsplanError("--store and --endpoint both given", hint="use one: a local store or a served one")
    return url or None


def open_backend(store_dir: Path | None, principal: str | None,
                 region: str | None = None) -> LocalBackend | RemoteBackend:
    """The embedded store in --store, or a served store at --endpoint (`region` reaches it when
    the AWS configuration names none: a stack's region, say)."""
    url = endpoint(store_dir)
    if url:
        return RemoteBackend.open(url, principal, region)
    from kmsplan.store.layout import default_store_dir

    return LocalBackend.open(store_dir or default_store_dir(), principal)
