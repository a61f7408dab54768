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
from kmsplan.plan.remote import AwsBackend, RemoteBackend

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


def _remember_aws(ctx: click.Context, param: click.Parameter, value: object) -> None:
    key = f"kmsplan.{param.name}"
    if value or key not in ctx.meta:
        ctx.meta[key] = value


def AWS_OPTIONS(command):  # noqa: N802 - a decorator used like the option constants
    """`--aws` and `--aws-principals`: the reconciler against AWS KMS itself (see AwsBackend)."""
    command = click.option(
        "--aws-principals", "aws_principals", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None, expose_value=False, callback=_remember_aws,
        help="With --aws: the principals and their IAM policies for the lockout guards (the YAML of "
             "`kmsplan store principals apply`); the caller and the account root are always included.")(command)
    return click.option(
        "--aws", "aws", is_flag=True, expose_value=False, callback=_remember_aws,
        help="Reconcile against AWS KMS itself with the AWS credential chain (tested here only against a "
             "served kmsplan store; see docs/reconciler.md).")(command)


def endpoint(store_dir: Path | None) -> str | None:
    """The --endpoint of the current command, if any (refused together with --store)."""
    url = click.get_current_context().meta.get(_META)
    if url and store_dir is not None:
        raise KmsplanError("--store and --endpoint both given", hint="use one: a local store or a served one")
    return url or None


def open_backend(store_dir: Path | None, principal: str | None, region: str | None = None,
                 regions: tuple[str, ...] = ()) -> LocalBackend | RemoteBackend:
    """The embedded store in --store, a served store at --endpoint (`region` reaches it when the
    AWS configuration names none: a stack's region, say), or AWS KMS with --aws in `regions` (the
    stack's, its home region first: plan signing and the apply lock live there)."""
    meta = click.get_current_context().meta
    if meta.get("kmsplan.aws"):
        if store_dir is not None or meta.get(_META):
            raise KmsplanError("--aws goes with neither --store nor --endpoint", hint="choose one target")
        if not regions:
            raise KmsplanError("--aws needs the stack's regions", hint="run it with the stack's PATH")
        return AwsBackend(regions, principal, meta.get("kmsplan.aws_principals"))
    url = endpoint(store_dir)
    if url:
        return RemoteBackend.open(url, principal, region)
    from kmsplan.store.layout import default_store_dir

    return LocalBackend.open(store_dir or default_store_dir(), principal)
