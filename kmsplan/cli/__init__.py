"""The `kmsplan` command line: one click group, one error boundary.

Subcommands live in their own modules and are registered at the bottom of this file. Every
`KmsplanError` (and every click usage error) is turned into a message on stderr and exit code 1
here, in one place; `--debug` shows the Python traceback for bug reports.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from kmsplan import __version__
from kmsplan.errors import KmsplanError


def _color() -> bool | None:
    """Honour NO_COLOR (https://no-color.org): any non-empty value turns colour off."""
    return False if os.environ.get("NO_COLOR") else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kmsplan")
@click.option("--debug", is_flag=True, help="Show Python tracebacks (for bug reports).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Declarative KMS keys, reconciled against an HSM-backed key store."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.color = _color()


def _report(error: KmsplanError) -> None:
    click.secho(f"Error: {error.message}", fg="red", err=True, color=_color())
    if error.hint:
        click.echo(f"  {error.hint}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 0 on success, 1 on any error (usage errors included)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="kmsplan", standalone_mode=False)
    except click.exceptions.Exit as done:
        code = done.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = 1
    except click.ClickException as error:
        error.show()
        code = 1
    except KmsplanError as error:
        if debug:
            traceback.print_exc()
        _report(error)
        code = error.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


# Subcommands register themselves here, one import each.
from kmsplan.cli import access_cmd, audit_cmd, demo_cmd, plan_cmd, store_cmd, validate_cmd  # noqa: E402
from kmsplan.cli import verify_cmd  # noqa: E402
from kmsplan.cli import serve_cmd  # noqa: E402

cli.add_command(store_cmd.store)
cli.add_command(audit_cmd.audit)
cli.add_command(demo_cmd.demo)
cli.add_command(access_cmd.access)
cli.add_command(validate_cmd.validate)
cli.add_command(verify_cmd.verify)
cli.add_command(serve_cmd.serve)
for command in plan_cmd.COMMANDS:
    cli.add_command(command)
