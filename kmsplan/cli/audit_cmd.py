"""`kmsplan audit ...`: read and verify the store's hash-chained audit log."""

from __future__ import annotations

from pathlib import Path

import click

from kmsplan.cli.store_cmd import STORE_OPTION
from kmsplan.errors import KmsplanError
from kmsplan.store.audit import AuditLog
from kmsplan.store.layout import StoreConfig, default_store_dir


def _log(store_dir: Path | None) -> AuditLog:
    config = StoreConfig.load(store_dir or default_store_dir())
    return AuditLog(config.path / "audit.log")


@click.group()
def audit() -> None:
    """Query and verify the audit log."""


@audit.command("verify")
@STORE_OPTION
def verify(store_dir: Path | None) -> None:
    """Check the hash chain; name the first altered, removed or reordered record."""
    log = _log(store_dir)
    try:
        count, broken = log.verify()
    finally:
        log.close()
    if broken is not None:
        raise KmsplanError(
            f"audit log chain broken at line {broken.line}" + (f" (record {broken.seq})" if broken.seq else "")
            + f": {broken.reason}; {count} record(s) before it verified",
            hint="the log was edited outside kmsplan: keep this copy as evidence and investigate",
        )
    click.echo(f"Audit log intact: {count} record(s), hash chain verified.")
