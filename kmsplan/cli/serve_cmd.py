"""`kmsplan serve`: the store as an AWS KMS endpoint (JSON 1.1 protocol, SigV4), see docs/server.md."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kmsplan.errors import KmsplanError
from kmsplan.store.layout import default_store_dir


def _listen(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise KmsplanError(f"--listen {text!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8443 or [::1]:8443 "
                           "(port 0 picks a free port and prints it)")
    return host, int(port)


@click.command("serve")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store folder (default: $KMSPLAN_STORE or ./.kmsplan).")
@click.option("--listen", "listen", default="127.0.0.1:8443", show_default=True,
              help="HOST:PORT to listen on (port 0: any free port, printed on start).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes, each with the store open (default: the number of CPUs).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="PEM certificate (chain) to serve HTTPS with.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="PEM private key of --tls-cert.")
@click.option("--request-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds a request may take to arrive, from its first byte to its last.")
@click.option("--idle-timeout", type=click.FloatRange(0.1, 3600), default=60.0, show_default=True,
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--grace", type=click.FloatRange(0, 3600), default=30.0, show_default=True,
              help="On SIGTERM, seconds to let requests in flight finish.")
@click.option("--request-log/--no-request-log", default=True, show_default=True,
              help="One JSON line per request on stderr.")
def serve(store_dir: Path | None, listen: str, workers: int | None, tls_cert: Path | None, tls_key: Path | None,
          request_timeout: float, idle_timeout: float, grace: float, request_log: bool) -> None:
    """Serve the store over HTTP(S) as an AWS KMS endpoint for boto3, the AWS CLI and the AWS
    Encryption SDK. Clients sign with access keys from `kmsplan store credentials create`.

    Runs until SIGTERM or Ctrl-C, then finishes the requests in flight.
    """
    from kmsplan.server.http import ServeOptions
    from kmsplan.server.http import serve as run

    host, port = _listen(listen)
    options = ServeOptions(store_dir=store_dir or default_store_dir(), host=host, port=port,
                           workers=workers or os.cpu_count() or 1, tls_cert=tls_cert, tls_key=tls_key,
                           request_timeout=request_timeout, idle_timeout=idle_timeout, grace=grace,
                           request_log=request_log)

    def announce(url: str) -> None:
        click.echo(f"kmsplan serve: listening on {url} ({options.workers} workers, store {options.store_dir})")

    if run(options, announce) != 0:
        raise KmsplanError("the server stopped because its workers could not start or kept failing",
                           hint="the JSON log lines above say why (a store that does not open, a token PIN)")
