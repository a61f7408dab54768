"""`kmsplan verify PATHS`: post-apply live checks of a stack, each pass or fail with evidence.

Exit 0 when every check passes, 1 when any fails (or on any error). Progress, one line per key,
goes to stderr on a terminal only, so CI logs and piped JSON stay clean.

With `--endpoint` (or KMSPLAN_ENDPOINT) it verifies a served store as the access key's principal,
as `plan --endpoint` reads it; the audit check then reads the served log (LookupEvents).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kmsplan.cli.plan_cmd import FORMAT_OPTION, PRINCIPAL_OPTION, use_color
from kmsplan.cli.store_cmd import STORE_OPTION
from kmsplan.cli.target import ENDPOINT_OPTION, open_backend
from kmsplan.plan import load_valid_stack
from kmsplan.verify import verify_stack
from kmsplan.verify import render


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@STORE_OPTION
@ENDPOINT_OPTION
@PRINCIPAL_OPTION
@FORMAT_OPTION
@click.option("--address", "addresses", multiple=True, metavar="ADDRESS",
              help="Check only this key (with its replicas) or replica (repeatable).")
@click.pass_context
def verify(ctx: click.Context, paths: tuple[str, ...], store_dir: Path | None, principal: str | None,
           output: str, addresses: tuple[str, ...]) -> None:
    """Prove on the live store that the stack in PATHS works as declared. Creates nothing."""
    stack = load_valid_stack(paths)
    # A line per key on stderr: on a terminal always, in a CI log when the report is text (plain
    # lines, no colour); JSON and Markdown reports off a terminal stay quiet for the tools reading them.
    shown = sys.stderr.isatty() or output == "text"
    progress = (lambda line: click.echo(line, err=True)) if shown else (lambda line: None)
    with open_backend(store_dir, principal, stack.region) as backend:
        report = verify_stack(stack, backend, addresses=addresses, progress=progress)
    if output == "json":
        click.echo(render.render_json(report), nl=False)
    elif output == "markdown":
        click.echo(render.render_markdown(report), nl=False)
    else:
        click.echo(render.render_text(report, color=use_color(ctx)), nl=False)
    ctx.exit(0 if report.ok else 1)
