"""`kmsplan validate PATH...`: check stacks offline and list every finding.

Exit 0 when there is no error (warnings allowed), 1 otherwise. Text goes to stdout one finding a
line; the summary goes to stderr so the findings stay machine-readable.
"""

from __future__ import annotations

import click

from kmsplan.stack import discover, format_json, format_text, has_errors, load_stack


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: file:line:col  CODE  severity  message; "
              "json: schemas/findings.schema.json.")
@click.pass_context
def validate(ctx: click.Context, paths: tuple[str, ...], output: str) -> None:
    """Validate the stack in PATHS (stack files, or folders read recursively for *.yaml)."""
    stack, findings = load_stack(list(paths))
    if output == "json":
        files = stack.files if stack is not None else [shown for _, shown in discover(paths)]
        click.echo(format_json(findings, files=files, stack=stack.name if stack else None),
                   nl=False)
    else:
        click.echo(format_text(findings), nl=False)
        errors = sum(1 for f in findings if f.is_error)
        warnings = len(findings) - errors
        if stack is not None:
            summary = (f"stack {stack.name}: {len(stack.keys)} key(s) in {len(stack.files)} "
                       f"file(s) valid, {warnings} warning(s)")
            click.secho(summary, err=True, fg="yellow" if warnings else "green",
                        color=ctx.color)
        else:
            click.secho(f"{errors} error(s), {warnings} warning(s)", err=True, fg="red",
                        color=ctx.color)
    ctx.exit(1 if has_errors(findings) else 0)
